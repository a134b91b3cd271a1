// cdk-nag's AwsSolutions pack runs at every synthesis (lib/app.ts) and fails
// it on any unacknowledged finding. These tests prove that it is active and
// which rule fires, that every acknowledgement answers a finding that really
// fires (strip them all and exactly those findings come back), and pin the
// list of acknowledgements: a new one must be added here on purpose, with its
// reason reviewed.

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import * as sns from 'aws-cdk-lib/aws-sns';
import type { IConstruct } from 'constructs';
import { offlineApp } from '../scripts/offline';
import { ARM_ONE_INSTANCE, DEFAULTS, SINGLE_USER_CMK } from './configurations';
import { synth } from './helpers';

const ACKNOWLEDGED = 'aws:cdk:acknowledged-rules';

interface Acknowledgement {
  path: string;
  rule: string;
  reason: string;
}

/** Every AwsSolutions acknowledgement under the given roots, with its reason. */
function acknowledgements(...roots: IConstruct[]): Acknowledgement[] {
  const out: Acknowledgement[] = [];
  for (const root of roots) {
    for (const c of root.node.findAll()) {
      for (const m of c.node.metadata) {
        if (m.type !== ACKNOWLEDGED) continue;
        for (const [rule, reason] of Object.entries(m.data as Record<string, string>)) {
          if (rule.includes('AwsSolutions')) out.push({ path: c.node.path, rule: rule.replace(/^Annotation::/, ''), reason });
        }
      }
    }
  }
  return out.sort((a, b) => `${a.path} ${a.rule}`.localeCompare(`${b.path} ${b.rule}`));
}

/** Synthesises and returns the AwsSolutions findings (`rule @ construct path`); [] when synthesis passes. */
function findings(app: { synth: () => unknown }, outdir: string): { rule: string; path: string }[] {
  try {
    app.synth();
    return [];
  } catch (err) {
    assert.equal((err as Error).name, 'ValidationFailed', String(err));
  }
  const report = JSON.parse(fs.readFileSync(path.join(outdir, 'validation-report.json'), 'utf8'));
  const nag = report.pluginReports.filter((p: { pluginName: string }) => p.pluginName === 'AwsSolutions');
  assert.equal(nag.length, 1, 'the AwsSolutions plugin reported');
  return nag[0].violations.flatMap((v: { ruleName: string; violatingConstructs: { constructPath: string }[] }) =>
    v.violatingConstructs.map((c) => ({ rule: v.ruleName, path: c.constructPath })),
  );
}

describe('cdk-nag AwsSolutions', () => {
  it('is active: an unencrypted topic without TLS enforcement fails synthesis on SNS3, at that topic', () => {
    const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'nag-active-'));
    const { app, stack } = offlineApp(ARM_ONE_INSTANCE, outdir);
    new sns.Topic(stack, 'Careless');
    const fired = findings(app, outdir);
    assert.deepEqual(fired, [{ rule: 'AwsSolutions-SNS3', path: `${stack.node.path}/Careless/Resource` }]);
  });

  for (const [name, context] of Object.entries({ DEFAULTS, SINGLE_USER_CMK })) {
    it(`${name}: every acknowledgement answers a finding that fires without it, and nothing else fires`, () => {
      const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'nag-stripped-'));
      const { app, stack } = offlineApp(context, outdir);
      const acks = acknowledgements(stack);
      assert.ok(acks.length > 0, 'no acknowledgements found');
      for (const c of stack.node.findAll()) {
        // No public API removes metadata; this is the test's own business.
        const node = c.node as unknown as { _metadata: unknown[] };
        node._metadata = c.node.metadata.flatMap((m) => {
          if (m.type !== ACKNOWLEDGED) return [m];
          const data = Object.fromEntries(Object.entries(m.data as Record<string, string>).filter(([rule]) => !rule.includes('AwsSolutions')));
          return Object.keys(data).length > 0 ? [{ ...m, data }] : [];
        });
      }
      const fired = findings(app, outdir);
      const answers = (a: Acknowledgement, f: { rule: string; path: string }) =>
        a.rule === f.rule && (f.path === a.path || f.path.startsWith(`${a.path}/`));
      for (const f of fired) assert.ok(acks.some((a) => answers(a, f)), `unacknowledged: ${f.rule} @ ${f.path}`);
      for (const a of acks) assert.ok(fired.some((f) => answers(a, f)), `acknowledged but never fires: ${a.rule} @ ${a.path}`);
    });
  }

  it('defaults: zero unacknowledged findings, and exactly these acknowledgements', () => {
    const s = synth(DEFAULTS);
    assert.deepEqual(
      acknowledgements(s.stack).map((a) => `${a.path} ${a.rule}`),
      [
        'PgRotation/AppSecretPreflight/FrameworkRole AwsSolutions-IAM5[Resource::<AppSecretRotationFunction0FB4872F.Arn>:*]',
        'PgRotation/AppSecretRotation/Role AwsSolutions-IAM5[Resource::*]',
        'PgRotation/Database/Instance AwsSolutions-RDS10',
        'PgRotation/Database/Instance AwsSolutions-RDS11',
        'PgRotation/Database/Instance AwsSolutions-RDS3',
        'PgRotation/Database/LogRetentionPolicy AwsSolutions-IAM5[Resource::arn:aws:logs:eu-west-1:123456789012:log-group:/aws/lambda/*LogRetention*:*]',
        'PgRotation/Database/LogRetentionPolicy AwsSolutions-IAM5[Resource::arn:aws:logs:eu-west-1:123456789012:log-group:/aws/rds/instance/<DatabaseInstanceAA8A5FDE>/postgresql:*]',
        'PgRotation/DatabaseLogins/FrameworkRole AwsSolutions-IAM5[Resource::<DatabaseLoginsFunction191A9B6B.Arn>:*]',
        'PgRotation/DatabaseLogins/Role AwsSolutions-IAM5[Resource::*]',
        'PgRotation/MasterSecretRotation/Role AwsSolutions-IAM5[Resource::*]',
        'PgRotation/OwnerSecretRotation/Role AwsSolutions-IAM5[Resource::*]',
        'PgRotation/SchemaMigration/Instance AwsSolutions-EC29',
        'PgRotation/SchemaMigration/Role AwsSolutions-IAM5[Resource::*]',
        'PgRotation/WebApp/Group AwsSolutions-AS3',
        'PgRotation/WebApp/LoadBalancer AwsSolutions-ELB2',
        'PgRotation/WebApp/Role AwsSolutions-IAM5[Resource::*]',
        'PgRotation/WebAppImage/CopyRole AwsSolutions-IAM5[Resource::*]',
      ],
    );
  });

  it('single user with a customer-managed key and every opt-out: the opt-outs are acknowledged, multi-AZ needs none', () => {
    const s = synth(SINGLE_USER_CMK);
    const rules = acknowledgements(s.stack).map((a) => `${a.path} ${a.rule}`);
    for (const expected of ['PgRotation/Database/Instance AwsSolutions-RDS10', 'PgRotation/Database/MasterSecret AwsSolutions-SMG4']) {
      assert.ok(rules.includes(expected), `missing ${expected}`);
    }
    assert.ok(!rules.includes('PgRotation/Database/Instance AwsSolutions-RDS3'), 'multi-AZ needs no acknowledgement');
  });

  it('every acknowledgement gives a reason of substance', () => {
    for (const context of [DEFAULTS, SINGLE_USER_CMK, ARM_ONE_INSTANCE]) {
      const s = synth(context);
      for (const a of acknowledgements(s.stack)) {
        assert.ok(a.reason.length >= 60, `${a.path} ${a.rule}: reason too short: ${a.reason}`);
      }
    }
  });
});
