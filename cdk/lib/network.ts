// The network path, in one place: who may talk to whom, on which port.
//
//   clients (appIngressCidr) ──80──▶ internal load balancer ──8080──▶ web app instances
//   (and instances ──80──▶ load balancer: the port forward of cdk/README.md)
//
//   rotation functions, ──5432──▶ database ◀──5432── web app instances (and the migration instance)
//   provisioner  │                                     │  │   │
//                └──443──▶ Secrets Manager endpoint ◀──┘  │   └─443─▶ S3 (gateway: ECR layers, dnf)
//                                                         └─443─▶ ECR, SSM, SSM messages,
//                                                                 CloudWatch Logs, CloudFormation endpoints
//
// Every subnet is isolated: no internet gateway, no NAT. AWS APIs are reached
// through VPC endpoints only, every endpoint whose service accepts a policy has
// one naming who may use it for what (SSM messages accepts none), and every
// security group starts with no egress. The load balancer and the SSM
// endpoints are optional, and the interface endpoints sit in one zone or two.

import { CfnResource, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';

export interface NetworkProps {
  readonly vpcCidr: string;
  readonly availabilityZones?: string[];
  readonly appIngressCidr: string;
  readonly appPort: number;
  /** The load balancer's listener port, the one `appIngressCidr` reaches. */
  readonly listenerPort: number;
  readonly dbPort: number;
  readonly logRetentionDays: number;
  readonly encryptionKey?: kms.IKey;
  /** The region's S3 prefix list (`com.amazonaws.<region>.s3`); looked up when absent. */
  readonly s3PrefixListId?: string;
  /** An internal load balancer exists (its security group and rules only then). */
  readonly loadBalancer: boolean;
  /** Zones the interface endpoints have network interfaces in: 1 or 2. */
  readonly endpointZones: 1 | 2;
  /** The SSM and SSM messages endpoints (Session Manager). */
  readonly sessionManager: boolean;
}

export const SUBNETS = { database: 'database', rotation: 'rotation', app: 'app' } as const;

export class Network extends Construct {
  readonly vpc: ec2.Vpc;
  readonly databaseSecurityGroup: ec2.SecurityGroup;
  readonly rotationSecurityGroup: ec2.SecurityGroup;
  readonly appSecurityGroup: ec2.SecurityGroup;
  readonly loadBalancerSecurityGroup?: ec2.SecurityGroup;
  readonly secretsManagerEndpoint: ec2.InterfaceVpcEndpoint;
  readonly secretsManagerEndpointSecurityGroup: ec2.SecurityGroup;
  readonly hostEndpointsSecurityGroup: ec2.SecurityGroup;
  /** The interface endpoints only the web app hosts use, by name (see HOST_SERVICES); SSM ones only with Session Manager. */
  readonly hostEndpoints: Partial<Record<HostService, ec2.InterfaceVpcEndpoint>>;
  readonly s3Endpoint: ec2.GatewayVpcEndpoint;
  readonly flowLogGroup: logs.LogGroup;
  /** The subnets (one per zone) of the load balancer, the instances and their endpoints. */
  readonly appSubnets: ec2.SubnetSelection;

  constructor(scope: Construct, id: string, props: NetworkProps) {
    super(scope, id);
    const isolated = (name: string): ec2.SubnetConfiguration => ({
      name,
      subnetType: ec2.SubnetType.PRIVATE_ISOLATED,
      cidrMask: 24,
    });
    this.vpc = new ec2.Vpc(this, 'Vpc', {
      ipAddresses: ec2.IpAddresses.cidr(props.vpcCidr),
      ...(props.availabilityZones ? { availabilityZones: props.availabilityZones.slice(0, 2) } : { maxAzs: 2 }),
      natGateways: 0,
      subnetConfiguration: [isolated(SUBNETS.database), isolated(SUBNETS.rotation), isolated(SUBNETS.app)],
      restrictDefaultSecurityGroup: true,
    });
    this.appSubnets = { subnetGroupName: SUBNETS.app };

    this.flowLogGroup = new logs.LogGroup(this, 'FlowLogs', {
      retention: props.logRetentionDays as logs.RetentionDays,
      encryptionKey: props.encryptionKey,
      removalPolicy: RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE,
    });
    // CDK's handler that empties the default security group
    // (restrictDefaultSecurityGroup) would log to a group Lambda creates
    // without retention; point it at one of ours.
    const restrictSgLogs = new logs.LogGroup(this, 'RestrictDefaultSgLogs', {
      retention: props.logRetentionDays as logs.RetentionDays,
      encryptionKey: props.encryptionKey,
      removalPolicy: RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE,
    });
    const provider = Stack.of(this).node.tryFindChild('Custom::VpcRestrictDefaultSGCustomResourceProvider');
    const handler = provider?.node.tryFindChild('Handler') as CfnResource | undefined;
    if (!handler) throw new Error('CDK no longer creates Custom::VpcRestrictDefaultSGCustomResourceProvider/Handler: revisit its log group');
    handler.addPropertyOverride('LoggingConfig', { LogGroup: restrictSgLogs.logGroupName });

    this.vpc.addFlowLog('FlowLog', {
      destination: ec2.FlowLogDestination.toCloudWatchLogs(this.flowLogGroup),
      trafficType: ec2.FlowLogTrafficType.ALL,
    });

    const sg = (name: string, description: string) =>
      new ec2.SecurityGroup(this, name, { vpc: this.vpc, description, allowAllOutbound: false });
    this.databaseSecurityGroup = sg('DatabaseSg', 'PostgreSQL: reachable from the rotation function and the web app only');
    this.rotationSecurityGroup = sg('RotationSg', 'Rotation functions: database port and Secrets Manager endpoint only');
    this.appSecurityGroup = sg('AppSg', 'Web app instances: app port from the load balancer; database and AWS endpoints out');
    if (props.loadBalancer) {
      this.loadBalancerSecurityGroup = sg('LoadBalancerSg', 'Internal load balancer: listener from the configured CIDR; app port to the instances');
    }
    this.secretsManagerEndpointSecurityGroup = sg('SecretsManagerEndpointSg', 'Secrets Manager endpoint: HTTPS from the functions and the app');
    this.hostEndpointsSecurityGroup = sg('HostEndpointsSg', 'ECR, SSM, Logs and CloudFormation endpoints: HTTPS from the web app instances only');

    const db = ec2.Port.tcp(props.dbPort);
    const https = ec2.Port.tcp(443);
    this.rotationSecurityGroup.connections.allowTo(this.databaseSecurityGroup, db, 'rotation function to PostgreSQL');
    this.appSecurityGroup.connections.allowTo(this.databaseSecurityGroup, db, 'web app to PostgreSQL');
    this.rotationSecurityGroup.connections.allowTo(this.secretsManagerEndpointSecurityGroup, https, 'rotation function to Secrets Manager');
    this.appSecurityGroup.connections.allowTo(this.secretsManagerEndpointSecurityGroup, https, 'web app to Secrets Manager');
    this.appSecurityGroup.connections.allowTo(this.hostEndpointsSecurityGroup, https, 'web app hosts to their AWS endpoints');
    if (this.loadBalancerSecurityGroup) {
      const lb = this.loadBalancerSecurityGroup;
      lb.connections.allowTo(this.appSecurityGroup, ec2.Port.tcp(props.appPort), 'load balancer to the app port');
      lb.addIngressRule(ec2.Peer.ipv4(props.appIngressCidr), ec2.Port.tcp(props.listenerPort), 'listener from the configured CIDR');
      // The documented way in from a workstation: a Session Manager port
      // forward through an instance to the load balancer
      // (AWS-StartPortForwardingSessionToRemoteHost); the instance then
      // connects to the listener, which needs this rule pair.
      this.appSecurityGroup.connections.allowTo(lb, ec2.Port.tcp(props.listenerPort), 'port forward through an instance to the listener');
    }

    // One zone or two: with one, traffic from the other zone crosses zones
    // (cents), and an outage of that zone cuts the instances and functions off
    // AWS APIs until it recovers; with two, each endpoint costs twice as much.
    const endpointSubnets = (subnetGroupName: string): ec2.SubnetSelection =>
      props.endpointZones === 1 ? { subnetGroupName, availabilityZones: [this.vpc.availabilityZones[0]] } : { subnetGroupName };
    this.secretsManagerEndpoint = this.vpc.addInterfaceEndpoint('SecretsManager', {
      service: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
      privateDnsEnabled: true,
      open: false,
      securityGroups: [this.secretsManagerEndpointSecurityGroup],
      subnets: endpointSubnets(SUBNETS.rotation),
    });

    // What the instances reach, in the zones they run in. Each endpoint's
    // policy is set by restrictHostEndpoints() once the role exists.
    const endpoints: Partial<Record<HostService, ec2.InterfaceVpcEndpoint>> = {};
    for (const name of Object.keys(HOST_SERVICES) as HostService[]) {
      if (!props.sessionManager && SESSION_MANAGER_SERVICES.includes(name)) continue;
      endpoints[name] = this.vpc.addInterfaceEndpoint(name, {
        service: HOST_SERVICES[name],
        privateDnsEnabled: true,
        open: false,
        securityGroups: [this.hostEndpointsSecurityGroup],
        subnets: endpointSubnets(SUBNETS.app),
      });
    }
    this.hostEndpoints = endpoints;

    // S3 carries ECR image layers and the Amazon Linux package repositories. The
    // endpoint policy admits only those two buckets, so a foothold on the instance
    // cannot use this path to copy data to a bucket of the attacker's.
    const region = Stack.of(this).region;
    this.s3Endpoint = this.vpc.addGatewayEndpoint('S3', {
      service: ec2.GatewayVpcEndpointAwsService.S3,
      subnets: [{ subnetGroupName: SUBNETS.app }],
    });
    this.s3Endpoint.addToPolicy(
      new iam.PolicyStatement({
        sid: 'EcrLayersAndAmazonLinuxRepositories',
        principals: [new iam.AnyPrincipal()],
        actions: ['s3:GetObject'],
        resources: [
          `arn:${Stack.of(this).partition}:s3:::prod-${region}-starport-layer-bucket/*`,
          `arn:${Stack.of(this).partition}:s3:::al2023-repos-${region}-de612dc2/*`,
        ],
      }),
    );
    const s3PrefixListId =
      props.s3PrefixListId ?? ec2.PrefixList.fromLookup(this, 'S3PrefixList', { prefixListName: `com.amazonaws.${region}.s3` }).prefixListId;
    this.appSecurityGroup.addEgressRule(ec2.Peer.prefixList(s3PrefixListId), https, 'web app host to S3 through the gateway endpoint');
  }

  /**
   * Limits what the Secrets Manager endpoint carries to this account's calls on
   * the given secrets: the endpoint cannot serve as a path to other secrets, in
   * this account or in an attacker's.
   */
  restrictSecretsManagerEndpointTo(secretArns: string[]): void {
    this.secretsManagerEndpoint.addToPolicy(
      new iam.PolicyStatement({
        sid: 'OnlyThisStacksSecrets',
        principals: [new iam.AnyPrincipal()],
        actions: [
          'secretsmanager:DescribeSecret',
          'secretsmanager:GetSecretValue',
          'secretsmanager:PutSecretValue',
          'secretsmanager:UpdateSecretVersionStage',
          'secretsmanager:ListSecretVersionIds',
        ],
        resources: secretArns,
        conditions: { StringEquals: { 'aws:PrincipalAccount': Stack.of(this).account } },
      }),
    );
  }

  /**
   * The hosts' roles (serving instances, migration instance) are the only
   * principals these endpoints serve, and only for what those roles may do
   * (lib/web-app-fleet.ts, lib/migration.ts): a foothold in the VPC cannot use
   * them with credentials of its own (another account's, to copy data out).
   *
   * SSM messages gets no policy: its endpoint service does not accept custom
   * endpoint policies (VpcEndpointPolicySupported is false for
   * com.amazonaws.<region>.ssmmessages in `aws ec2 describe-vpc-endpoint-services`),
   * and a policy on it fails the endpoint's creation and with it the first
   * deployment. Its security group admits the hosts only, and Session Manager
   * authorises every session (ssm:StartSession) on the caller's side.
   */
  restrictHostEndpoints(access: HostEndpointAccess): void {
    const only = (sid: string, actions: string[], resources: string[], roleArns: string[]) =>
      new iam.PolicyStatement({
        sid,
        principals: [new iam.AnyPrincipal()],
        actions,
        resources,
        conditions: { ArnEquals: { 'aws:PrincipalArn': roleArns.length === 1 ? roleArns[0] : roleArns } },
      });
    const hosts = [access.instanceRoleArn, access.migrationRoleArn];
    const pull = only('PullTheAppImage', [...ECR_PULL_ACTIONS], [access.imageRepositoryArn], hosts);
    const login = only('LogInToEcr', ['ecr:GetAuthorizationToken'], ['*'], hosts);
    const e = this.hostEndpoints;
    e.EcrApi?.addToPolicy(login);
    e.EcrApi?.addToPolicy(pull);
    e.EcrDocker?.addToPolicy(pull);
    e.Ssm?.addToPolicy(only('RegisterWithSessionManager', [...SSM_AGENT_ACTIONS.ssm], ['*'], [access.instanceRoleArn]));
    e.Logs?.addToPolicy(only('WriteTheAppLog', [...APP_LOG_ACTIONS], [access.appLogGroupArn], hosts));
    e.CloudFormation?.addToPolicy(only('SignalThisStack', ['cloudformation:SignalResource'], [access.stackId], hosts));
  }
}

/**
 * The instances' AWS APIs besides Secrets Manager: ECR (api and registry) to
 * pull the image, SSM and SSM messages for Session Manager, CloudWatch Logs for
 * the app's log (the credential switch lines the dashboard reads), and
 * CloudFormation for the boot signal of a rolling replacement. EC2 messages
 * (Run Command) is deliberately absent: the instance role does not allow it.
 */
export const HOST_SERVICES = {
  EcrApi: ec2.InterfaceVpcEndpointAwsService.ECR,
  EcrDocker: ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
  Ssm: ec2.InterfaceVpcEndpointAwsService.SSM,
  SsmMessages: ec2.InterfaceVpcEndpointAwsService.SSM_MESSAGES,
  Logs: ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
  CloudFormation: ec2.InterfaceVpcEndpointAwsService.CLOUDFORMATION,
} as const;
export type HostService = keyof typeof HOST_SERVICES;
/** The endpoints only Session Manager needs (`-c sessionManager=false` leaves them out). */
export const SESSION_MANAGER_SERVICES: readonly HostService[] = ['Ssm', 'SsmMessages'];
/**
 * Endpoint services that do not accept a custom endpoint policy: creating the
 * endpoint with one fails. Checked by test/network.test.ts against the template.
 */
export const NO_ENDPOINT_POLICY: readonly HostService[] = ['SsmMessages'];

export interface HostEndpointAccess {
  readonly instanceRoleArn: string;
  readonly migrationRoleArn: string;
  readonly imageRepositoryArn: string;
  readonly appLogGroupArn: string;
  readonly stackId: string;
}

/** One list per purpose, used by the instance role and by the endpoint policies alike. */
export const ECR_PULL_ACTIONS = ['ecr:BatchCheckLayerAvailability', 'ecr:GetDownloadUrlForLayer', 'ecr:BatchGetImage'] as const;
/**
 * What Session Manager needs on the instance, no more (AWS's own minimal
 * Session Manager instance policy, e.g. the AWSCloud9SSMInstanceProfile managed
 * policy): register the agent, open the control and data channels. Nothing of
 * AmazonSSMManagedInstanceCore's ssm:GetParameter(s) on "*", documents,
 * associations, inventory or Run Command (ec2messages).
 */
export const SSM_AGENT_ACTIONS = {
  ssm: ['ssm:UpdateInstanceInformation'],
  ssmmessages: [
    'ssmmessages:CreateControlChannel',
    'ssmmessages:CreateDataChannel',
    'ssmmessages:OpenControlChannel',
    'ssmmessages:OpenDataChannel',
  ],
} as const;
/** Docker's awslogs driver: a stream per instance, then events. */
export const APP_LOG_ACTIONS = ['logs:CreateLogStream', 'logs:PutLogEvents'] as const;
