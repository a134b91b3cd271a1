// `npm test` (node's test runner, without scripts/test.sh) must leave nothing
// in the temporary directory: every process the suites start writes into a
// directory of its own (scripts/offline.ts) and removes it when it exits.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { PROCESS_TMPDIR } from '../scripts/offline';

describe('temporary files', () => {
  it('a synthesis like the suites run (stand-in assets, assembly, CDK staging, CA layer) leaves the temporary directory empty', () => {
    // This process's own private directory stands in for /tmp.
    const tmp = fs.mkdtempSync(path.join(PROCESS_TMPDIR, 'isolated-'));
    // tsx's compile cache (a tsx-<uid> directory) is off in `npm test` too (package.json).
    const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: tmp, TSX_DISABLE_CACHE: '1' };
    delete env.PG_ROTATION_SYNTH_CACHE; // synthesise for itself, into the temporary directory
    execFileSync(
      process.execPath,
      ['--import', 'tsx', '-e', "require('./scripts/offline').synthesise({ fleetSize: '1' }); console.log('synthesised')"],
      { cwd: path.resolve(__dirname, '..'), env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    assert.deepEqual(fs.readdirSync(tmp), []);
  });
});
