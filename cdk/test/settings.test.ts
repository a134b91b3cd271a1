// Context parsing (`-c key=value` arrives as strings), the function-asset check
// and the RDS CA bundle: fast tests, no synthesis.

// First: this process's private temporary directory, removed at exit.
import '../scripts/offline';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { describe, it } from 'node:test';
import { rdsCaBundlePem, rdsRootCertificates } from '../lib/rds-ca-bundle';
import { defaultSettings, settingsFromContext } from '../lib/settings';
import { checkFunctionAsset } from '../lib/stack';
import { App, IgnoreMode, Stack } from 'aws-cdk-lib';
import * as ecrAssets from 'aws-cdk-lib/aws-ecr-assets';

const fromContext = (ctx: Record<string, unknown>) => settingsFromContext((k) => ctx[k]);

describe('settings from context', () => {
  it('defaults: alternating users, 30 days, deletion protection on, function built for arm64', () => {
    const s = fromContext({});
    assert.deepEqual(s, { ...defaultSettings(), availabilityZones: undefined, s3PrefixListId: undefined, alertEmail: undefined });
    assert.equal(s.rotationStrategy, 'alternating-users');
    assert.equal(s.rotationDays, 30);
    assert.equal(s.deletionProtection, true);
    assert.equal(s.rotationFnArchitecture, 'x86_64');
    // The major version: RDS picks (and upgrades) the minor, so a new deployment never asks for a retired one.
    assert.equal(s.postgresVersion, '17');
    assert.equal(fromContext({ postgresVersion: '16.9' }).postgresVersion, '16.9', 'a minor can still be pinned');
    assert.deepEqual([s.loadBalancer, s.endpointZones, s.sessionManager], [true, 2, true]);
    assert.ok(s.rotationFnAssetDir.endsWith(path.join('target', 'lambda', 'bootstrap')));
  });

  it('parses strings from the command line', () => {
    const s = fromContext({ rotationDays: '7', deletionProtection: 'false', appIngressCidr: '203.0.113.7/32', rotationStrategy: 'single-user' });
    assert.equal(s.rotationDays, 7);
    assert.equal(s.deletionProtection, false);
    assert.equal(s.appIngressCidr, '203.0.113.7/32');
    assert.equal(s.rotationStrategy, 'single-user');
  });

  it('refuses invalid values, naming the key', () => {
    for (const [ctx, key] of [
      [{ rotationStrategy: 'multi-user' }, 'rotationStrategy'],
      [{ rotationDays: '0' }, 'rotationDays'],
      [{ rotationDays: '400' }, 'rotationDays'],
      // Only the cadences lib/schedules.ts staggers.
      [{ rotationDays: '14' }, 'rotationDays'],
      [{ deletionProtection: 'yes' }, 'deletionProtection'],
      [{ appIngressCidr: '0.0.0.0' }, 'appIngressCidr'],
      [{ appIngressCidr: '300.1.1.1/32' }, 'appIngressCidr'],
      [{ postgresVersion: 'latest' }, 'postgresVersion'],
      [{ postgresVersion: '17.' }, 'postgresVersion'],
      [{ endpointZones: '3' }, 'endpointZones'],
      [{ loadBalancer: 'no' }, 'loadBalancer'],
      [{ sessionManager: 'maybe' }, 'sessionManager'],
      [{ alertEmail: 'not-an-address' }, 'alertEmail'],
      [{ passwordLength: '8' }, 'passwordLength'],
      [{ fleetSize: '0' }, 'fleetSize'],
      [{ fleetSize: 'two' }, 'fleetSize'],
    ] as const) {
      assert.throws(() => fromContext(ctx), new RegExp(`context ${key}:`), JSON.stringify(ctx));
    }
  });
});

describe('settings of earlier versions', () => {
  it('scanImagesOnPush is refused with the reason, not silently ignored', () => {
    assert.throws(() => fromContext({ scanImagesOnPush: 'false' }), /context scanImagesOnPush: no longer a setting: .*scans on push/);
  });

  it('fleetSize defaults to 2 and takes a number from the command line', () => {
    assert.equal(fromContext({}).fleetSize, 2);
    assert.equal(fromContext({ fleetSize: '4' }).fleetSize, 4);
  });
});

describe('function asset check', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fn-asset-'));
  const elf = (machine: number) => {
    const head = Buffer.alloc(64);
    head.write('\x7fELF', 0, 'latin1');
    head.writeUInt16LE(machine, 18);
    fs.writeFileSync(path.join(dir, 'bootstrap'), head);
  };

  it('tells how to build when bootstrap is missing', () => {
    assert.throws(() => checkFunctionAsset(path.join(dir, 'nowhere'), 'arm64'), /cargo lambda build --release -p rotation-fn --arm64/);
  });

  it('refuses a binary built for the other architecture', () => {
    elf(0x3e);
    assert.throws(() => checkFunctionAsset(dir, 'arm64'), /built for x86_64 but the function is configured for arm64/);
    checkFunctionAsset(dir, 'x86_64');
    elf(0xb7);
    checkFunctionAsset(dir, 'arm64');
  });
});

describe('web app image build context', () => {
  // The real Dockerfile and .dockerignore from the repository root, in a
  // scratch workspace laid out as the repository is after this round; the hash
  // is the one CDK gives the image asset (what names the image tag and so
  // decides whether the fleet is replaced).
  const repo = path.resolve(__dirname, '..', '..');
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'image-context-'));
  const write = (file: string, text: string) => {
    fs.mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
    fs.writeFileSync(path.join(root, file), text);
  };
  for (const file of ['Dockerfile', '.dockerignore', 'docker/stub-workspace-members.sh']) {
    fs.mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
    fs.copyFileSync(path.join(repo, file), path.join(root, file));
  }
  write('Cargo.toml', '[workspace]\nmembers = ["db-secret", "rotation-fn", "web-app", "sm-local", "tests"]\n');
  write('Cargo.lock', '# lock\n');
  for (const member of ['db-secret', 'rotation-fn', 'web-app', 'sm-local', 'tests']) {
    write(`${member}/Cargo.toml`, `[package]\nname = "${member}"\n`);
    write(`${member}/src/lib.rs`, '// source\n');
  }
  write('web-app/migrations/0001_notes.sql', 'CREATE TABLE notes ();\n');
  let n = 0;
  const assetHash = () => {
    const stack = new Stack(new App({ outdir: fs.mkdtempSync(path.join(os.tmpdir(), 'image-hash-')) }), `Hash${n++}`);
    return new ecrAssets.DockerImageAsset(stack, 'Image', { directory: root, file: 'Dockerfile', ignoreMode: IgnoreMode.DOCKER }).assetHash;
  };
  const changes = (file: string) => {
    const before = assetHash();
    write(file, `${fs.existsSync(path.join(root, file)) ? fs.readFileSync(path.join(root, file), 'utf8') : ''}// changed ${n}\n`);
    return assetHash() !== before;
  };

  for (const file of [
    'tests/src/lib.rs',
    'tests/tests/rotation_single_user.rs',
    'rotation-fn/src/lib.rs',
    'rotation-fn/src/steps/set.rs',
    'sm-local/src/main.rs',
    'cdk/lib/stack.ts',
    'docs/threat-model.md',
    'README.md',
    'web-app/README.md',
    'docker/base-images.sh',
    'docker/README.md',
    'tests/docker/test-image.sh',
    'target/release/web-app',
    '.git/HEAD',
    'cdk/node_modules/x/index.js',
    'web-app/src/.env',
    'web-app/src/server.pem',
  ]) {
    it(`a change to ${file} does not change the image`, () => assert.equal(changes(file), false));
  }
  for (const file of [
    'web-app/src/lib.rs',
    'web-app/migrations/0001_notes.sql',
    'db-secret/src/lib.rs',
    'Cargo.lock',
    'Cargo.toml',
    'tests/Cargo.toml',
    'rotation-fn/Cargo.toml',
    'Dockerfile',
    'docker/stub-workspace-members.sh',
  ]) {
    it(`a change to ${file} changes the image`, () => assert.equal(changes(file), true));
  }
});

describe('docker/stub-workspace-members.sh', () => {
  it('gives members without sources an empty crate with every declared target, and leaves the others alone', () => {
    const ws = fs.mkdtempSync(path.join(os.tmpdir(), 'stub-members-'));
    const write = (file: string, text: string) => {
      fs.mkdirSync(path.dirname(path.join(ws, file)), { recursive: true });
      fs.writeFileSync(path.join(ws, file), text);
    };
    write('web-app/Cargo.toml', '[package]\nname = "web-app"\n');
    write('web-app/src/main.rs', 'real source\n');
    write('rotation-fn/Cargo.toml', '[package]\nname = "rotation-fn"\n\n[lib]\nname = "rotation_fn"\npath = "src/lib.rs"\n\n[[bin]]\nname = "bootstrap"\npath = "src/main.rs"\n');
    write(
      'tests/Cargo.toml',
      '[package]\nname = "e2e"\n\n[dependencies]\nx = "1"\n\n[[bench]]\nname = "rotation"\nharness = false\n\n[[test]]\nname = "it"\npath = "tests/it/main.rs"\n\n[[bin]]\nname = "tool"\n',
    );
    execFileSync('sh', [path.resolve(__dirname, '..', '..', 'docker', 'stub-workspace-members.sh')], { cwd: ws });
    const files = (dir: string): string[] =>
      fs.readdirSync(path.join(ws, dir), { recursive: true, withFileTypes: true })
        .filter((e) => e.isFile())
        .map((e) => path.relative(ws, path.join(e.parentPath, e.name)))
        .sort();
    assert.deepEqual(files('web-app'), ['web-app/Cargo.toml', 'web-app/src/main.rs']);
    assert.equal(fs.readFileSync(path.join(ws, 'web-app/src/main.rs'), 'utf8'), 'real source\n');
    assert.deepEqual(files('rotation-fn'), ['rotation-fn/Cargo.toml', 'rotation-fn/src/lib.rs', 'rotation-fn/src/main.rs']);
    assert.deepEqual(files('tests'), [
      'tests/Cargo.toml',
      'tests/benches/rotation.rs',
      'tests/src/bin/tool.rs',
      'tests/src/lib.rs',
      'tests/src/main.rs',
      'tests/tests/it/main.rs',
    ]);
  });
});

describe('RDS CA bundle', () => {
  it("holds only the region's self-signed, currently valid RDS root CAs", () => {
    const roots = rdsRootCertificates('eu-west-1');
    assert.ok(roots.length >= 1, 'at least one root');
    for (const root of roots) {
      assert.match(root.subject, /^Amazon RDS eu-west-1 Root CA (RSA2048|RSA4096|ECC384) G1$/);
      const cert = new X509Certificate(root.pem);
      assert.ok(cert.ca && cert.verify(cert.publicKey), `${root.subject} is a self-signed CA`);
    }
    // The instance uses rds-ca-rsa2048-g1 (lib/database.ts): its root must be there.
    assert.ok(roots.some((r) => r.subject.includes('RSA2048')), 'the RSA2048 root');
    assert.ok(rdsCaBundlePem('eu-west-1').length < 8 * 1024, 'small enough for user data');
  });

  it('refuses a region it has no roots for', () => {
    assert.throws(() => rdsRootCertificates('xx-nowhere-1'), /No Amazon RDS root CA for region xx-nowhere-1/);
  });
});
