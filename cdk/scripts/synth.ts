// Offline synthesis for cfn-lint and checkov: writes one cloud assembly per
// configuration under OUTDIR (default: cdk.out/offline), the configurations the
// tests synthesise (test/configurations.ts). Synthesis runs cdk-nag too:
// an unacknowledged finding makes it fail. scripts/test.sh checks directories
// ending in `-default-keys` with the extra skips of
// compliance/checkov-skips-default-keys.yaml, the others without them.
//
//   node --import tsx scripts/synth.ts [OUTDIR]

import * as fs from 'node:fs';
import * as path from 'node:path';
import { CONFIGURATIONS } from '../test/configurations';
import { synthesise } from './offline';

function main(): void {
  const outRoot = path.resolve(process.argv[2] ?? path.join(__dirname, '..', 'cdk.out', 'offline'));
  for (const [name, context] of Object.entries(CONFIGURATIONS)) {
    const outdir = path.join(outRoot, name);
    fs.rmSync(outdir, { recursive: true, force: true });
    fs.mkdirSync(outRoot, { recursive: true });
    // The tests' assembly of the same configuration when this run has one.
    fs.cpSync(synthesise(context).outdir, outdir, { recursive: true });
    for (const file of fs.readdirSync(outdir).filter((f) => f.endsWith('.template.json'))) {
      console.log(`synthesised ${name}: ${path.relative(process.cwd(), path.join(outdir, file))}`);
    }
  }
}

if (require.main === module) {
  main();
}
