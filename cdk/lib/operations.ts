// Alerting on failed rotations. A rotation that fails leaves the old password
// in place and says so nowhere but in CloudTrail: Secrets Manager emits
// `RotationFailed` (a step failed) and `RotationAbandoned` (a pending version
// was overwritten) as "AWS Service Event via CloudTrail", which EventBridge
// receives without a trail. The rule forwards them to an SNS topic.
//
// The rule matches these events for every secret in the account and region,
// not only this stack's: the events carry the secret in a field whose exact
// form we cannot check offline, and a wrong filter would silence the one alarm
// that matters. A failed rotation of any secret is worth an e-mail.

import { Stack, Validations } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';

export interface OperationsProps {
  readonly alertEmail?: string;
  readonly encryptionKey?: kms.IKey;
}

export const ROTATION_FAILURE_EVENTS = ['RotationFailed', 'RotationAbandoned'];

export class Operations extends Construct {
  readonly topic: sns.Topic;
  readonly rule: events.Rule;

  constructor(scope: Construct, id: string, props: OperationsProps) {
    super(scope, id);
    this.topic = new sns.Topic(this, 'RotationAlerts', {
      displayName: 'Secrets Manager rotation failures',
      enforceSSL: true,
      masterKey: props.encryptionKey,
    });
    if (!props.encryptionKey) {
      Validations.of(this.topic).acknowledge({
        id: 'AwsSolutions-SNS2',
        reason:
          'Without customerManagedKey=true the topic is unencrypted: the AWS-managed SNS key cannot be used by ' +
          'EventBridge. Messages carry secret ARNs and event metadata, never secret values.',
      });
    }
    if (props.alertEmail) {
      this.topic.addSubscription(new subscriptions.EmailSubscription(props.alertEmail));
    }

    this.rule = new events.Rule(this, 'RotationFailures', {
      description: 'Secrets Manager rotation failed or was abandoned',
      eventPattern: {
        source: ['aws.secretsmanager'],
        detailType: ['AWS Service Event via CloudTrail'],
        detail: {
          eventSource: ['secretsmanager.amazonaws.com'],
          eventName: ROTATION_FAILURE_EVENTS,
        },
      },
    });
    // Bound by hand rather than with targets.SnsTopic, so that the topic policy
    // admits EventBridge only on behalf of this rule (aws:SourceArn).
    const topic = this.topic;
    const rule = this.rule;
    this.rule.addTarget({
      bind: () => ({ arn: topic.topicArn, id: 'RotationAlertsTopic' }),
    });
    this.topic.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'PublishFromTheRotationFailureRule',
        principals: [new iam.ServicePrincipal('events.amazonaws.com')],
        actions: ['sns:Publish'],
        resources: [this.topic.topicArn],
        conditions: { ArnEquals: { 'aws:SourceArn': rule.ruleArn } },
      }),
    );
    if (props.encryptionKey) {
      props.encryptionKey.addToResourcePolicy(
        new iam.PolicyStatement({
          sid: 'EventBridgePublishesToTheEncryptedTopic',
          principals: [new iam.ServicePrincipal('events.amazonaws.com')],
          actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
          resources: ['*'],
          conditions: { StringEquals: { 'aws:SourceAccount': Stack.of(this).account } },
        }),
      );
    }
  }
}
