// The pre-flight of the app secret, run by the deployment (README "Pre-flight").
//
// A CloudFormation custom resource (`Custom::RotationPreflight`) through CDK's
// `custom_resources.Provider` framework, whose onEvent handler is the app
// secret's rotation function itself: the very function, role, network path
// and configuration a rotation will use, so what it reports is what a
// rotation would meet. The contract with rotation-fn: the framework forwards
// CloudFormation's request, `{"RequestType": "Create"|"Update"|"Delete",
// "ResourceProperties": {"ServiceToken", "Operation": "preflight", "SecretId",
// "Trigger"}, "PhysicalResourceId"?}` plus the fields the function does not
// read (ResponseURL, StackId, RequestId, LogicalResourceId, ResourceType, and
// OldResourceProperties on Update). On Create and Update it answers
//   PhysicalResourceId "preflight:<SecretId>",
//   Data {Ready: "true"|"false", Failed: "<n>", Warnings: "<n>",
//         Summary: "ready" or the failed checks with their fixes (<= 1000 chars)}
// and on Delete returns the event's PhysicalResourceId, checking nothing.
//
// A failed check never fails the resource: the invocation succeeds whatever
// the checks find, so a pre-flight never rolls a deployment back. The result
// surfaces three ways: the stack outputs `AppPreflightReady` and
// `AppPreflightSummary` (lib/stack.ts), and the function's own `pre-flight`
// log line, which the `AppRotationPreflightFailed` alarm reads
// (lib/operations.ts). The invocation errors only on a malformed event.
//
// It runs on the first deployment and again whenever `Trigger` changes: a
// hash of the function's configuration, its role and its layer as they are
// synthesised (code asset hash, environment, VPC, permissions, CA bundle), so
// an update that changes what a rotation runs with is checked once. A
// deployment that changes nothing of the function does not re-run it; for an
// ad-hoc run there is the `AppPreflightCommand` output.

import { createHash } from 'node:crypto';
import { CfnResource, CustomResource, Lazy, Stack } from 'aws-cdk-lib';
import type * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct, type IConstruct } from 'constructs';
import { providerFramework } from './provider-framework';
import type { SecretRotation } from './rotation';

export interface RotationPreflightProps {
  /** The rotation whose function runs the pre-flight (its function, role and log group). */
  readonly rotation: SecretRotation;
  /** The secret it rotates, as attached to the database (host and port in it). */
  readonly secret: secretsmanager.ISecret;
  /** The function's layers: their content is part of what the pre-flight checks (the RDS CA bundle). */
  readonly layers: lambda.ILayerVersion[];
  readonly logRetentionDays: number;
  readonly encryptionKey?: kms.IKey;
}

export class RotationPreflight extends Construct {
  readonly resource: CustomResource;
  /** The Provider framework's own function (outside the VPC): its role and log group. */
  readonly frameworkRole: iam.Role;
  readonly frameworkLogGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: RotationPreflightProps) {
    super(scope, id);
    const fn = props.rotation.function;

    const framework = providerFramework(this, {
      onEventHandler: fn,
      handlerName: "the app secret's rotation function",
      description: "Custom resource framework of the app secret's pre-flight: invoke its rotation function, write its log",
      logRetentionDays: props.logRetentionDays,
      encryptionKey: props.encryptionKey,
    });
    this.frameworkRole = framework.role;
    this.frameworkLogGroup = framework.logGroup;

    this.resource = new CustomResource(this, 'Result', {
      serviceToken: framework.provider.serviceToken,
      resourceType: 'Custom::RotationPreflight',
      properties: {
        Operation: 'preflight',
        SecretId: props.secret.secretArn,
        Trigger: configurationHash([fn, props.rotation.role, ...props.layers]),
      },
    });
    // The function and its permissions (the role's inline policy) first; the
    // service token already waits for the function, this says it outright.
    this.resource.node.addDependency(fn, props.rotation.role);
  }

  /** "true" when no check failed (warnings allowed). */
  get ready(): string {
    return this.resource.getAttString('Ready');
  }

  /** "ready", or the failed checks with their fixes (at most 1000 characters). */
  get summary(): string {
    return this.resource.getAttString('Summary');
  }
}

/**
 * sha256 of the synthesised properties of the given resources (each construct
 * or its default child), resolved at synthesis: references stay references
 * (`{"Ref": ...}`), asset locations are content hashes, so the value is the
 * same for the same inputs and synthesis stays reproducible.
 */
export function configurationHash(constructs: IConstruct[]): string {
  return Lazy.string({
    produce: () => {
      const hash = createHash('sha256');
      for (const c of constructs) {
        const resource = (c.node.defaultChild ?? c) as IConstruct;
        if (!CfnResource.isCfnResource(resource)) throw new Error(`${c.node.path} is not a CloudFormation resource`);
        const rendered = Stack.of(resource).resolve(resource._toCloudFormation()) as { Resources: Record<string, { Properties?: unknown }> };
        for (const [logicalId, r] of Object.entries(rendered.Resources)) {
          hash.update(JSON.stringify([logicalId, r.Properties ?? {}]));
        }
      }
      return hash.digest('hex');
    },
  });
}
