// What operators watch and what wakes them up.
//
// Alerts. A rotation that fails leaves the old password in place and says so
// nowhere but in CloudTrail: Secrets Manager emits `RotationFailed` (a step
// failed), `RotationAbandoned` (a pending version was overwritten) and
// `TestRotationFailed` (the test of a new rotation configuration, run at
// deployment, failed) as "AWS Service Event via CloudTrail", which EventBridge
// receives without a trail. The rule forwards them to an SNS topic. CloudWatch
// alarms on the functions and the fleet publish to the same topic.
//
// The rule matches these events for every secret in the account and region,
// not only this stack's: the events carry the secret in a field whose exact
// form we cannot check offline, and a wrong filter would silence the one alarm
// that matters. A failed rotation of any secret is worth an e-mail.
//
// The dashboard is laid out for a rotation: the functions' steps, then the
// fleet behind the load balancer, then each instance's credential version
// (from the app's "switched" log line, contracts.md), so one screen shows the
// new version appear in Secrets Manager and every instance move to it.

import { Duration, Stack } from 'aws-cdk-lib';
import type * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as events from 'aws-cdk-lib/aws-events';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as rds from 'aws-cdk-lib/aws-rds';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';

/** A rotation function as the dashboard and the alarms see it. */
export interface WatchedFunction {
  readonly name: string;
  readonly function: lambda.IFunction;
  readonly logGroup: logs.ILogGroup;
  readonly timeout: Duration;
}

export interface OperationsProps {
  readonly alertEmail?: string;
  readonly encryptionKey?: kms.IKey;
  readonly rotations: WatchedFunction[];
  /** Absent with -c loadBalancer=false. */
  readonly loadBalancer?: elbv2.ApplicationLoadBalancer;
  readonly targetGroup?: elbv2.ApplicationTargetGroup;
  readonly database: rds.DatabaseInstance;
  /** The database instance class's memory-derived max_connections, for the connections alarm. */
  readonly maxConnections: number;
  readonly group: autoscaling.AutoScalingGroup;
  /** The app's stdout, one stream per instance. */
  readonly appLogGroup: logs.ILogGroup;
  readonly fleetSize: number;
}

export const ROTATION_FAILURE_EVENTS = ['RotationFailed', 'RotationAbandoned', 'TestRotationFailed'];

/** Metric namespace of the app's log-derived metrics. */
export const APP_METRICS_NAMESPACE = 'PgRotation/WebApp';

/** Metric namespace of the rotation functions' log-derived metrics (the pre-flight's). */
export const ROTATION_METRICS_NAMESPACE = 'PgRotation/Rotation';

/** The message of the function's evidence line (rotation-fn `IN_USE_MESSAGE`). */
export const RETIRING_EVIDENCE_MESSAGE = 'sessions of the login whose password changes';

/** A function whose slowest invocation takes this share of its timeout is near failing. */
const DURATION_ALARM_SHARE = 0.8;

export class Operations extends Construct {
  readonly topic: sns.Topic;
  readonly rule: events.Rule;
  readonly dashboard: cloudwatch.Dashboard;
  readonly alarms: cloudwatch.Alarm[] = [];
  readonly switchFilter: logs.MetricFilter;
  /** One per rotation function: failed checks of each pre-flight it answers. */
  readonly preflightFilters: logs.MetricFilter[] = [];
  /** One per rotation function: sessions of the login a setSecret retired. */
  readonly retiringLoginFilters: logs.MetricFilter[] = [];

  constructor(scope: Construct, id: string, props: OperationsProps) {
    super(scope, id);
    const stack = Stack.of(this);
    this.topic = new sns.Topic(this, 'RotationAlerts', {
      displayName: 'Secrets Manager rotation failures and fleet alarms',
      enforceSSL: true,
      masterKey: props.encryptionKey,
    });
    // Without customerManagedKey=true the topic is unencrypted: EventBridge
    // cannot use the AWS-managed SNS key. Messages carry secret ARNs and event
    // metadata, never secret values (checkov skip CKV_AWS_26 says the same).
    if (props.alertEmail) {
      this.topic.addSubscription(new subscriptions.EmailSubscription(props.alertEmail));
    }

    this.rule = new events.Rule(this, 'RotationFailures', {
      description: 'Secrets Manager rotation failed, was abandoned, or its deployment-time test failed',
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
    // CloudWatch publishes alarm state changes; only this stack's alarms (their
    // generated names start with the stack name), only from this account.
    this.topic.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'PublishFromThisStacksAlarms',
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['sns:Publish'],
        resources: [this.topic.topicArn],
        conditions: {
          ArnLike: { 'aws:SourceArn': `arn:${stack.partition}:cloudwatch:${stack.region}:${stack.account}:alarm:${stack.stackName}-*` },
          StringEquals: { 'aws:SourceAccount': stack.account },
        },
      }),
    );
    if (props.encryptionKey) {
      props.encryptionKey.addToResourcePolicy(
        new iam.PolicyStatement({
          sid: 'EventBridgeAndCloudWatchPublishToTheEncryptedTopic',
          principals: [new iam.ServicePrincipal('events.amazonaws.com'), new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
          actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
          resources: ['*'],
          conditions: { StringEquals: { 'aws:SourceAccount': stack.account } },
        }),
      );
    }

    // Each credential switch of an instance is one JSON line on its stdout:
    // {"level":"INFO","message":"switched …","to":"<version id>","user":"…"}.
    // Counted per version id: during a rotation the new version's count climbs
    // to the fleet size as the instances move over.
    this.switchFilter = new logs.MetricFilter(this, 'CredentialSwitches', {
      logGroup: props.appLogGroup,
      filterPattern: logs.FilterPattern.stringValue('$.message', '=', 'switched*'),
      metricNamespace: APP_METRICS_NAMESPACE,
      metricName: 'CredentialSwitches',
      metricValue: '1',
      dimensions: { Version: '$.to' },
    });

    // Every alarm tells the topic; a period with no data is not a breach.
    const alarm = (alarmId: string, a: Omit<cloudwatch.AlarmProps, 'treatMissingData'>) => {
      const created = new cloudwatch.Alarm(this, alarmId, { ...a, treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING });
      created.addAlarmAction(new cwActions.SnsAction(this.topic));
      this.alarms.push(created);
      return created;
    };
    /** Fires on the first occurrence: `metric` at 1 or more in one period. */
    const onFirst = (alarmId: string, alarmDescription: string, metric: cloudwatch.IMetric) =>
      alarm(alarmId, {
        alarmDescription,
        metric,
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      });
    /** A rotation function's JSON log line counted as `<function><name>`, its value one of the line's fields. */
    const fromRotationLog = (r: WatchedFunction, name: string, filterPattern: logs.IFilterPattern, metricValue: string) =>
      new logs.MetricFilter(this, `${r.name}${name}`, {
        logGroup: r.logGroup,
        filterPattern,
        metricNamespace: ROTATION_METRICS_NAMESPACE,
        metricName: `${r.name}${name}`,
        metricValue,
      });
    const fiveMinutes = Duration.minutes(5);
    for (const r of props.rotations) {
      onFirst(
        `${r.name}Errors`,
        `${r.name}: a rotation step failed (its log names the step, the error type, the host and the SQLSTATE)`,
        r.function.metricErrors({ period: fiveMinutes, statistic: 'Sum' }),
      );
      // A pre-flight (`{"Operation": "preflight"}`, README "Pre-flight") logs
      // one JSON line, {"fields": {"message": "pre-flight", "ready", "failed",
      // "warnings", "secret"}}: its failed-check count is the metric, and any
      // failed check wakes someone before the schedule finds it. The
      // invocation itself succeeds whatever it finds, so the Errors alarm
      // above never sees it.
      const preflight = fromRotationLog(
        r,
        'PreflightFailedChecks',
        logs.FilterPattern.stringValue('$.fields.message', '=', 'pre-flight'),
        '$.fields.failed',
      );
      this.preflightFilters.push(preflight);
      onFirst(
        `${r.name}PreflightFailed`,
        `${r.name}: a pre-flight found a check a rotation would fail on; run it again for the table with each fix ` +
          '(README "Pre-flight")',
        preflight.metric({ period: fiveMinutes, statistic: 'Maximum' }),
      );
      // Every setSecret logs who is still connected as the login whose
      // password it changes (README "Who is still connected when a password
      // changes"): {"fields": {"message": "sessions of the login whose password
      // changes", "role": "retiring" | "current", "sessions", "clients", "login"}}.
      // Sessions of a *retiring* login (alternating users: the one AWSPREVIOUS
      // held) are clients that have not moved and fail at their next login.
      const retiring = fromRotationLog(
        r,
        'RetiringLoginSessions',
        logs.FilterPattern.all(
          logs.FilterPattern.stringValue('$.fields.message', '=', RETIRING_EVIDENCE_MESSAGE),
          logs.FilterPattern.stringValue('$.fields.role', '=', 'retiring'),
        ),
        '$.fields.sessions',
      );
      this.retiringLoginFilters.push(retiring);
      onFirst(
        `${r.name}RetiringLoginInUse`,
        `${r.name}: a rotation changed (or, with RETIRING_LOGIN_IN_USE=fail, held off changing) the password of a ` +
          'login that still had sessions; the log line names the clients, which fail at their next login',
        retiring.metric({ period: fiveMinutes, statistic: 'Maximum' }),
      );
      alarm(`${r.name}Duration`, {
        alarmDescription: `${r.name}: a step took over ${DURATION_ALARM_SHARE * 100} % of the function's timeout`,
        metric: r.function.metricDuration({ period: fiveMinutes, statistic: 'Maximum' }),
        threshold: r.timeout.toMilliseconds() * DURATION_ALARM_SHARE,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      });
    }
    // The database: CPU, free storage (autoscaling storage has a ceiling),
    // connections near the instance class's limit.
    const db = props.database;
    alarm('DatabaseCpu', {
      alarmDescription: 'Database CPU above 80 % for 15 minutes',
      metric: db.metricCPUUtilization({ period: fiveMinutes, statistic: 'Average' }),
      threshold: 80,
      evaluationPeriods: 3,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    });
    alarm('DatabaseFreeStorage', {
      alarmDescription: 'Database free storage below 2 GiB (storage autoscaling stops at its maximum)',
      metric: db.metricFreeStorageSpace({ period: fiveMinutes, statistic: 'Minimum' }),
      threshold: 2 * 1024 ** 3,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
    });
    alarm('DatabaseConnections', {
      alarmDescription: `Database connections above 80 % of the instance class's ${props.maxConnections}`,
      metric: db.metricDatabaseConnections({ period: fiveMinutes, statistic: 'Maximum' }),
      threshold: Math.floor(props.maxConnections * 0.8),
      evaluationPeriods: 2,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    });
    // The fleet: fewer instances in service than its size (launch failures,
    // EC2 status-check replacements that do not come back). Missing data is
    // not a breach: the metrics start a few minutes after the group, and an
    // empty group still reports 0.
    alarm('InstancesInService', {
      alarmDescription: `Fewer than ${props.fleetSize} web app instances in service for 10 minutes`,
      metric: new cloudwatch.Metric({
        namespace: 'AWS/AutoScaling',
        metricName: 'GroupInServiceInstances',
        dimensionsMap: { AutoScalingGroupName: props.group.autoScalingGroupName },
        period: fiveMinutes,
        statistic: 'Minimum',
      }),
      threshold: props.fleetSize,
      evaluationPeriods: 2,
      comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
    });
    // The rule itself: a rotation failure that EventBridge could not deliver
    // to the topic (a key or topic policy broken) would otherwise be silent.
    onFirst(
      'AlertDeliveryFailures',
      'EventBridge failed to deliver a rotation failure event to the alert topic',
      new cloudwatch.Metric({
        namespace: 'AWS/Events',
        metricName: 'FailedInvocations',
        dimensionsMap: { RuleName: this.rule.ruleName },
        period: fiveMinutes,
        statistic: 'Sum',
      }),
    );

    const tg = props.targetGroup?.metrics;
    const loadBalancer = props.loadBalancer;
    const target5xx = tg?.httpCodeTarget(elbv2.HttpCodeTarget.TARGET_5XX_COUNT, { period: Duration.minutes(1), statistic: 'Sum' });
    const unhealthy = tg?.unhealthyHostCount({ period: Duration.minutes(1), statistic: 'Maximum' });
    if (target5xx && unhealthy) {
      alarm('Target5xx', {
        alarmDescription: 'The app answered 5xx through the load balancer (a rotation should cause none)',
        metric: target5xx,
        threshold: 5,
        evaluationPeriods: 3,
        datapointsToAlarm: 2,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      });
      alarm('UnhealthyInstances', {
        alarmDescription: 'An instance fails /ready (it cannot reach the database with its current login)',
        metric: unhealthy,
        threshold: 1,
        evaluationPeriods: 3,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      });
    }

    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      defaultInterval: Duration.hours(3),
    });
    const fnMetric = (get: (f: lambda.IFunction) => cloudwatch.Metric) =>
      props.rotations.map((r) => get(r.function).with({ label: r.name }));
    const rotationLogs = props.rotations.map((r) => r.logGroup.logGroupName);
    this.dashboard.addWidgets(
      new cloudwatch.TextWidget({
        width: 24,
        height: 2,
        markdown:
          '### Rotation, top to bottom\n' +
          'Start one with `aws secretsmanager rotate-secret --secret-id <AppSecretArn>`. The functions run ' +
          'createSecret, setSecret, testSecret, finishSecret; then every instance logs a switch to the new version ' +
          `(${props.fleetSize} instances: the new version's count reaches ${props.fleetSize}). 5xx and unhealthy instances should stay at 0.`,
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Rotation function invocations (one per step)',
        width: 8,
        left: fnMetric((f) => f.metricInvocations({ period: Duration.minutes(1), statistic: 'Sum' })),
      }),
      new cloudwatch.GraphWidget({
        title: 'Rotation function errors',
        width: 8,
        left: fnMetric((f) => f.metricErrors({ period: Duration.minutes(1), statistic: 'Sum' })),
      }),
      new cloudwatch.GraphWidget({
        title: 'Rotation step duration (max, ms)',
        width: 8,
        left: fnMetric((f) => f.metricDuration({ period: Duration.minutes(1), statistic: 'Maximum' })),
      }),
    );
    if (loadBalancer && tg && target5xx && unhealthy) {
      this.dashboard.addWidgets(
        new cloudwatch.GraphWidget({
          title: 'Requests through the load balancer',
          width: 8,
          left: [loadBalancer.metrics.requestCount({ period: Duration.minutes(1), statistic: 'Sum' })],
          right: [tg.targetResponseTime({ period: Duration.minutes(1), statistic: 'p99' }).with({ label: 'p99 response time (s)' })],
        }),
        new cloudwatch.GraphWidget({
          title: '5xx: from the app, from the load balancer',
          width: 8,
          left: [
            target5xx.with({ label: 'target 5xx' }),
            loadBalancer.metrics
              .httpCodeElb(elbv2.HttpCodeElb.ELB_5XX_COUNT, { period: Duration.minutes(1), statistic: 'Sum' })
              .with({ label: 'load balancer 5xx' }),
          ],
        }),
        new cloudwatch.GraphWidget({
          title: 'Instances passing /ready',
          width: 8,
          left: [
            tg.healthyHostCount({ period: Duration.minutes(1), statistic: 'Minimum' }).with({ label: 'healthy' }),
            unhealthy.with({ label: 'unhealthy' }),
          ],
        }),
      );
    }
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Credential switches, by secret version',
        width: 12,
        left: [
          new cloudwatch.MathExpression({
            expression: `SEARCH('{${APP_METRICS_NAMESPACE},Version} MetricName="CredentialSwitches"', 'Sum', 60)`,
            label: '',
            period: Duration.minutes(1),
          }),
        ],
      }),
      new cloudwatch.LogQueryWidget({
        title: 'Credential version of each instance (latest switch; log stream = instance id)',
        width: 12,
        logGroupNames: [props.appLogGroup.logGroupName],
        view: cloudwatch.LogQueryVisualizationType.TABLE,
        queryLines: [
          'fields @timestamp, @logStream, to, user',
          "filter message like /^switched/",
          'stats latest(to) as version, latest(user) as login, max(@timestamp) as since by @logStream',
          'sort since desc',
        ],
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.LogQueryWidget({
        title: 'Rotation steps (latest 50 log lines of the functions)',
        width: 24,
        logGroupNames: rotationLogs,
        view: cloudwatch.LogQueryVisualizationType.TABLE,
        // The function logs JSON with its span (step, secret, token) and the event's fields.
        queryLines: [
          'fields @timestamp, @log, span.step, fields.message, fields.kind, fields.transient, fields.duration_ms',
          'sort @timestamp desc',
          'limit 50',
        ],
      }),
    );
    this.dashboard.addWidgets(new cloudwatch.AlarmStatusWidget({ title: 'Alarms', width: 24, alarms: this.alarms }));
  }
}

