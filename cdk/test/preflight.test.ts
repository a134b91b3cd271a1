// The deployment runs the app secret's pre-flight once (lib/preflight.ts):
// the custom resource and its contract with the rotation function, the
// Provider in front of it, what it waits for and what waits for it, when it
// runs again, and the outputs that surface its result.

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import type { CfnResource } from 'aws-cdk-lib';
import { offlineApp } from '../scripts/offline';
import { DEFAULTS, LEAN, SINGLE_USER_CMK } from './configurations';
import { synth, type Synthesised, waitsFor } from './helpers';

function preflightResource(s: Synthesised) {
  const resource = s.json.Resources[s.logicalId(s.stack.preflight.resource)];
  assert.ok(resource, 'the pre-flight resource');
  return resource;
}

/** The Trigger of the pre-flight of a stack built (not synthesised) with `context`. */
function triggerOf(context: Record<string, unknown>): string {
  const { stack } = offlineApp(context);
  const cfn = stack.preflight.resource.node.defaultChild as CfnResource;
  const rendered = stack.resolve(cfn._toCloudFormation()) as { Resources: Record<string, { Properties: { Trigger: string } }> };
  return Object.values(rendered.Resources)[0].Properties.Trigger;
}

describe("the app secret's pre-flight at deployment", () => {
  for (const [name, context] of Object.entries({ DEFAULTS, SINGLE_USER_CMK, LEAN })) {
    it(`${name}: a Custom::RotationPreflight with the contract's properties, for the app secret as attached to the database`, () => {
      const s = synth(context);
      const resource = preflightResource(s);
      assert.equal(resource.Type, 'Custom::RotationPreflight');
      const { ServiceToken, Trigger, ...rest } = resource.Properties!;
      assert.ok(ServiceToken, 'a service token');
      assert.deepEqual(rest, { Operation: 'preflight', SecretId: s.ref(s.stack.database.appSecretAttachment.secretArn) });
      // The same secret the function rotates (a Ref to the attachment is the secret's ARN).
      assert.deepEqual(s.ref(s.stack.database.appSecretAttachment.secretArn), { Ref: s.logicalId(s.stack.database.appSecretAttachment) });
      assert.match(Trigger, /^[0-9a-f]{64}$/);
    });
  }

  for (const [name, context] of Object.entries({ DEFAULTS, SINGLE_USER_CMK })) {
    it(`${name}: its service token is a Provider whose onEvent handler is the app rotation function, outside the VPC, logging with a retention`, () => {
      const s = synth(context);
      const token = preflightResource(s).Properties!.ServiceToken;
      assert.equal(token['Fn::GetAtt'][1], 'Arn');
      const framework = s.json.Resources[token['Fn::GetAtt'][0]];
      assert.equal(framework.Type, 'AWS::Lambda::Function');
      const fn = framework.Properties!;
      assert.equal(fn.Handler, 'framework.onEvent');
      assert.deepEqual(fn.Environment.Variables, {
        USER_ON_EVENT_FUNCTION_ARN: { 'Fn::GetAtt': [s.logicalId(s.stack.appRotation.function), 'Arn'] },
      });
      assert.deepEqual(fn.Role, { 'Fn::GetAtt': [s.logicalId(s.stack.preflight.frameworkRole), 'Arn'] });
      assert.equal(fn.VpcConfig, undefined, 'it answers CloudFormation through a pre-signed S3 URL on the internet');
      assert.equal(fn.ReservedConcurrentExecutions, undefined);
      const logGroupId = s.logicalId(s.stack.preflight.frameworkLogGroup);
      assert.deepEqual(fn.LoggingConfig.LogGroup, { Ref: logGroupId });
      const logGroup = s.json.Resources[logGroupId] as Record<string, any>;
      assert.equal(logGroup.Properties.RetentionInDays, 365);
      assert.equal(logGroup.DeletionPolicy, 'RetainExceptOnCreate');
      if (s.stack.key) {
        assert.deepEqual(fn.KmsKeyArn, s.ref(s.stack.key.keyArn), 'environment encrypted with the stack key');
        assert.deepEqual(logGroup.Properties.KmsKeyId, s.ref(s.stack.key.keyArn));
      } else {
        assert.equal(fn.KmsKeyArn, undefined);
      }
      // Not the provisioner's Provider: one framework per handler.
      assert.notEqual(token['Fn::GetAtt'][0], s.json.Resources[s.logicalId(s.stack.provisioner.resource)].Properties!.ServiceToken['Fn::GetAtt'][0]);
    });
  }

  it('runs after the database logins, the function and its role, and before the app secret\'s rotation schedule is attached', () => {
    for (const context of [DEFAULTS, SINGLE_USER_CMK]) {
      const s = synth(context);
      const id = s.logicalId(s.stack.preflight.resource);
      const dependsOn = preflightResource(s).DependsOn ?? [];
      for (const dependency of [s.stack.provisioner.resource, s.stack.appRotation.function, s.stack.appRotation.role]) {
        assert.ok(dependsOn.includes(s.logicalId(dependency)), `waits for ${dependency.node.path}`);
      }
      // Attaching the schedule starts Secrets Manager's test of it (an AWSPENDING
      // version, then removed): a pre-flight racing it would report a failure.
      const schedule = s.json.Resources[s.logicalId(s.stack.appRotation.schedule)];
      assert.ok(schedule.DependsOn?.includes(id), 'the schedule waits for the pre-flight');
      assert.equal(schedule.Properties!.RotateImmediatelyOnUpdate, false);
      // And nothing the pre-flight waits for, directly or not, waits for the schedule.
      const scheduleId = s.logicalId(s.stack.appRotation.schedule);
      assert.ok(!waitsFor(s.json, id).has(scheduleId), 'the pre-flight does not wait for the schedule');
    }
  });

  it('outputs its result next to the command that runs it by hand', () => {
    const s = synth(DEFAULTS);
    const outputs = s.json.Outputs as Record<string, { Value: unknown }>;
    const id = s.logicalId(s.stack.preflight.resource);
    assert.deepEqual(outputs.AppPreflightReady.Value, { 'Fn::GetAtt': [id, 'Ready'] });
    assert.deepEqual(outputs.AppPreflightSummary.Value, { 'Fn::GetAtt': [id, 'Summary'] });
    const keys = Object.keys(outputs);
    assert.deepEqual(keys.slice(keys.indexOf('AppPreflightCommand'), keys.indexOf('AppPreflightCommand') + 3), [
      'AppPreflightCommand',
      'AppPreflightReady',
      'AppPreflightSummary',
    ]);
  });

  it("runs again when the function's code or configuration changes, not on other changes, and synthesis stays reproducible", () => {
    const base = triggerOf(DEFAULTS);
    assert.equal(triggerOf(DEFAULTS), base, 'the same inputs give the same value');
    assert.equal(preflightResource(synth(DEFAULTS)).Properties!.Trigger, base, 'the synthesised template carries the same value');
    assert.equal(triggerOf({ fleetSize: '3', alertEmail: 'ops@example.com' }), base, 'a change elsewhere does not re-run it');
    assert.notEqual(triggerOf({ passwordLength: '40' }), base, 'the function configuration (its environment)');
    assert.notEqual(triggerOf({ rotationStrategy: 'single-user' }), base, 'the strategy (and with it the role: no master secret)');
    const other = fs.mkdtempSync(path.join(os.tmpdir(), 'other-bootstrap-'));
    fs.writeFileSync(path.join(other, 'bootstrap'), '#!/bin/sh\n# another build of the function\nexit 2\n', { mode: 0o755 });
    assert.notEqual(triggerOf({ rotationFnAssetDir: other }), base, 'the code');
  });
});
