// Context parsing (`-c key=value` arrives as strings), the function-asset check
// and the RDS CA bundle: fast tests, no synthesis.

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { describe, it } from 'node:test';
import { rdsCaBundlePem, rdsRootCertificates } from '../lib/rds-ca-bundle';
import { defaultSettings, settingsFromContext } from '../lib/settings';
import { checkFunctionAsset } from '../lib/stack';
import { FileSystem, IgnoreMode } from 'aws-cdk-lib';
import { IMAGE_CONTEXT_EXCLUDES } from '../lib/web-app-host';

const fromContext = (ctx: Record<string, unknown>) => settingsFromContext((k) => ctx[k]);

describe('settings from context', () => {
  it('defaults: alternating users, 30 days, deletion protection on, function built for arm64', () => {
    const s = fromContext({});
    assert.deepEqual(s, { ...defaultSettings(), availabilityZones: undefined, s3PrefixListId: undefined, alertEmail: undefined });
    assert.equal(s.rotationStrategy, 'alternating-users');
    assert.equal(s.rotationDays, 30);
    assert.equal(s.deletionProtection, true);
    assert.equal(s.rotationFnArchitecture, 'arm64');
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
      [{ deletionProtection: 'yes' }, 'deletionProtection'],
      [{ appIngressCidr: '0.0.0.0' }, 'appIngressCidr'],
      [{ appIngressCidr: '300.1.1.1/32' }, 'appIngressCidr'],
      [{ postgresVersion: '17' }, 'postgresVersion'],
      [{ alertEmail: 'not-an-address' }, 'alertEmail'],
      [{ passwordLength: '8' }, 'passwordLength'],
    ] as const) {
      assert.throws(() => fromContext(ctx), new RegExp(`context ${key}:`), JSON.stringify(ctx));
    }
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
  // The context is the repository root. Build output, the CDK app, git and
  // node_modules must not change the image's fingerprint (a rebuild and a new
  // instance on every `cargo build`), nor be sent to Docker.
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'image-context-'));
  const write = (file: string, text: string) => {
    fs.mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
    fs.writeFileSync(path.join(root, file), text);
  };
  const fingerprint = () => FileSystem.fingerprint(root, { exclude: IMAGE_CONTEXT_EXCLUDES, ignoreMode: IgnoreMode.DOCKER });
  write('Dockerfile', 'FROM scratch\n');
  write('web-app/src/main.rs', 'fn main() {}\n');
  write('Cargo.lock', '# lock\n');

  it('ignores target/, cdk/, .git and node_modules', () => {
    const before = fingerprint();
    write('target/release/web-app', 'binary');
    write('target/lambda/bootstrap/bootstrap', 'binary');
    write('cdk/node_modules/x/index.js', 'x');
    write('cdk/cdk.out/PgRotation.template.json', '{}');
    write('.git/HEAD', 'ref: refs/heads/main');
    write('tests/node_modules/y.js', 'y');
    assert.equal(fingerprint(), before);
  });

  it('changes with the sources and the Dockerfile', () => {
    const before = fingerprint();
    write('web-app/src/main.rs', 'fn main() { println!(); }\n');
    const afterSource = fingerprint();
    assert.notEqual(afterSource, before);
    write('Dockerfile', 'FROM scratch\nUSER 65532\n');
    assert.notEqual(fingerprint(), afterSource);
  });
});

describe('RDS CA bundle', () => {
  it("holds only the region's self-signed, currently valid RDS root CAs", () => {
    const roots = rdsRootCertificates('eu-west-1');
    assert.ok(roots.length >= 1);
    for (const root of roots) {
      assert.match(root.subject, /^Amazon RDS eu-west-1 Root CA (RSA2048|RSA4096|ECC384) G1$/);
      const cert = new X509Certificate(root.pem);
      assert.ok(cert.ca && cert.verify(cert.publicKey));
    }
    // The instance uses rds-ca-rsa2048-g1 (lib/database.ts): its root must be there.
    assert.ok(roots.some((r) => r.subject.includes('RSA2048')));
    assert.ok(rdsCaBundlePem('eu-west-1').length < 8 * 1024, 'small enough for user data');
  });

  it('refuses a region it has no roots for', () => {
    assert.throws(() => rdsRootCertificates('xx-nowhere-1'), /No Amazon RDS root CA for region xx-nowhere-1/);
  });
});
