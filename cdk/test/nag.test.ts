// cdk-nag's AwsSolutions pack runs at every synthesis (lib/app.ts) and fails
// it on any unacknowledged finding. These tests prove that it is active, that
// every configuration passes it, and pin the list of acknowledgements: a new
// one must be added here on purpose, with its reason reviewed.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as sns from 'aws-cdk-lib/aws-sns';
import type { IConstruct } from 'constructs';
import { offlineApp } from '../scripts/offline';
import { DEFAULTS, SINGLE_USER_CMK } from './configurations';
import { synth } from './helpers';

const ACKNOWLEDGED = 'aws:cdk:acknowledged-rules';

/** `path -> rule ids` of every AwsSolutions acknowledgement, with its reason. */
function acknowledgements(root: IConstruct): { path: string; rule: string; reason: string }[] {
  const out: { path: string; rule: string; reason: string }[] = [];
  for (const c of root.node.findAll()) {
    for (const m of c.node.metadata) {
      if (m.type !== ACKNOWLEDGED) continue;
      for (const [rule, reason] of Object.entries(m.data as Record<string, string>)) {
        if (rule.includes('AwsSolutions')) out.push({ path: c.node.path, rule: rule.replace(/^Annotation::/, ''), reason });
      }
    }
  }
  return out.sort((a, b) => `${a.path} ${a.rule}`.localeCompare(`${b.path} ${b.rule}`));
}

describe('cdk-nag AwsSolutions', () => {
  it('is active: an unencrypted topic without TLS enforcement fails synthesis', () => {
    const { app, stack } = offlineApp({ rotationStrategy: 'single-user' });
    new sns.Topic(stack, 'Careless');
    assert.throws(() => app.synth(), (err: Error) => {
      assert.equal(err.name, 'ValidationFailed');
      return true;
    });
  });

  it('defaults: zero unacknowledged findings, and exactly these acknowledgements', () => {
    const s = synth(DEFAULTS);
    assert.deepEqual(
      acknowledgements(s.stack).map((a) => `${a.path} ${a.rule}`),
      [
        'PgRotation/AppSecretRotation/Role AwsSolutions-IAM5[Resource::*]',
        'PgRotation/Database/Instance AwsSolutions-RDS11',
        'PgRotation/Database/Instance AwsSolutions-RDS3',
        'PgRotation/Database/Instance AwsSolutions-RDS6',
        'PgRotation/MasterSecretRotation/Role AwsSolutions-IAM5[Resource::*]',
        'PgRotation/Operations/RotationAlerts AwsSolutions-SNS2',
        'PgRotation/WebApp/Instance AwsSolutions-EC28',
        'PgRotation/WebApp/Instance AwsSolutions-EC29',
        'PgRotation/WebApp/Role AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore]',
        'PgRotation/WebApp/Role AwsSolutions-IAM5[Resource::*]',
      ],
    );
  });

  it('single user with a customer-managed key and every opt-out: zero unacknowledged findings', () => {
    const s = synth(SINGLE_USER_CMK);
    const rules = acknowledgements(s.stack).map((a) => `${a.path} ${a.rule}`);
    // The key encrypts the topic, so SNS2 needs no acknowledgement; the opt-outs do.
    assert.ok(!rules.some((r) => r.includes('SNS2')));
    for (const expected of [
      'PgRotation/Database/Instance AwsSolutions-RDS10',
      'PgRotation/Database/MasterSecret AwsSolutions-SMG4',
    ]) {
      assert.ok(rules.includes(expected), `missing ${expected}`);
    }
    assert.ok(!rules.includes('PgRotation/Database/Instance AwsSolutions-RDS3'), 'multi-AZ needs no acknowledgement');
  });

  it('every acknowledgement gives a reason of substance', () => {
    for (const context of [DEFAULTS, SINGLE_USER_CMK]) {
      for (const a of acknowledgements(synth(context).stack)) {
        assert.ok(a.reason.length >= 60, `${a.path} ${a.rule}: reason too short: ${a.reason}`);
      }
    }
  });
});
