// Offline synthesis for cfn-lint and checkov: writes one cloud assembly per
// configuration under OUTDIR (default: cdk.out/offline), so the checks cover
// both rotation strategies and both key choices. Synthesis runs cdk-nag too:
// an unacknowledged finding makes it fail. scripts/test.sh checks directories
// ending in `-default-keys` with the extra skips of
// compliance/checkov-skips-default-keys.yaml, the others without them.
//
//   node --import tsx scripts/synth.ts [OUTDIR]

import * as fs from 'node:fs';
import * as path from 'node:path';
import { offlineApp } from './offline';

/** The configurations the compliance checks run on. */
export const CONFIGURATIONS: Record<string, Record<string, unknown>> = {
  'alternating-users-default-keys': { rotationStrategy: 'alternating-users', alertEmail: 'ops@example.com' },
  'single-user-cmk': {
    rotationStrategy: 'single-user',
    customerManagedKey: 'true',
    rotateMasterSecret: 'false',
    deletionProtection: 'false',
    multiAz: 'true',
  },
};

function main(): void {
  const outRoot = path.resolve(process.argv[2] ?? path.join(__dirname, '..', 'cdk.out', 'offline'));
  for (const [name, context] of Object.entries(CONFIGURATIONS)) {
    const outdir = path.join(outRoot, name);
    fs.rmSync(outdir, { recursive: true, force: true });
    const { app } = offlineApp(context, outdir);
    const assembly = app.synth();
    for (const stack of assembly.stacks) {
      console.log(`synthesised ${name}: ${path.relative(process.cwd(), path.join(outdir, stack.templateFile))}`);
    }
  }
}

if (require.main === module) {
  main();
}
