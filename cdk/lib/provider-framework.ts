// CDK's custom resource Provider framework in front of one of the stack's own
// functions, as every custom resource of ours uses it (the database logins,
// the pre-flight): a role of its own and a log group with retention, instead
// of the defaults.
//
// The framework's function answers CloudFormation (a pre-signed S3 URL on the
// internet), so it stays outside the VPC; all it may do is invoke its one
// handler and write its log. Its role is ours rather than the default one with
// the AWSLambdaBasicExecutionRole managed policy; the Provider adds the invoke
// (and lookup) grant on the handler itself.

import { Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as logs from 'aws-cdk-lib/aws-logs';
import * as cr from 'aws-cdk-lib/custom-resources';
import type { Construct } from 'constructs';
import { functionLogGroup } from './rotation';

export interface ProviderFrameworkProps {
  /** The function CloudFormation's events go to. */
  readonly onEventHandler: lambda.Function;
  /** The handler as the role's description and the acknowledgement name it ("the provisioner"). */
  readonly handlerName: string;
  /** The role's description. */
  readonly description: string;
  readonly logRetentionDays: number;
  readonly encryptionKey?: kms.IKey;
}

export interface ProviderFramework {
  readonly provider: cr.Provider;
  readonly role: iam.Role;
  readonly logGroup: logs.LogGroup;
}

/**
 * The Provider with its role and log group, created in `scope` as
 * `FrameworkLogs`, `FrameworkRole` and `Provider`.
 */
export function providerFramework(scope: Construct, props: ProviderFrameworkProps): ProviderFramework {
  const stack = Stack.of(scope);
  const logGroup = functionLogGroup(scope, 'FrameworkLogs', props.logRetentionDays, props.encryptionKey);
  const role = new iam.Role(scope, 'FrameworkRole', {
    assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
    description: props.description,
    inlinePolicies: {
      Framework: new iam.PolicyDocument({
        statements: [
          new iam.PolicyStatement({
            sid: 'WriteItsOwnLogs',
            actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
            resources: [logGroup.logGroupArn],
          }),
        ],
      }),
    },
  });
  const provider = new cr.Provider(scope, 'Provider', {
    onEventHandler: props.onEventHandler,
    frameworkOnEventRole: role,
    logGroup,
    providerFunctionEnvEncryption: props.encryptionKey,
  });
  Validations.of(role).acknowledge({
    id: `AwsSolutions-IAM5[Resource::<${stack.getLogicalId(props.onEventHandler.node.defaultChild as lambda.CfnFunction)}.Arn>:*]`,
    reason:
      `Added by the Provider framework (grantInvoke): lambda:InvokeFunction on ${props.handlerName} and its versions ` +
      '("<arn>:*"), nothing else; the function has no published versions.',
  });
  return { provider, role, logGroup };
}
