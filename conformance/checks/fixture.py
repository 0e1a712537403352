"""An image of a test's own code against its golden (the ``diffusion_golden`` fixture,
:mod:`conformance.fixture`), looked up and judged as the own-class check is. Its tests are
one's own: the kind parametrizes none."""

from __future__ import annotations

from typing import Any

from conformance.cases import Item
from conformance.checks import CheckKind, Context, Param, register
from conformance.checks.own_class import own_class
from conformance.core import Check
from conformance.session import ConformanceSession, Verdict


class Fixture(CheckKind):
    check = Check.FIXTURE
    may_be_empty = True

    def params(self, ctx: Context, *args: Any) -> list[Param]:
        return []

    def run(self, session: ConformanceSession, subject: Item, variant: Any) -> Verdict:
        return own_class(session, subject, Check.FIXTURE)

    def reproduce(self, session: ConformanceSession, nodeid: str) -> str:
        """A test of one's own runs again by its node id."""
        return session.reproduce_command(nodeid, builtin=False)


KIND = register(Fixture())
