// The network path, in one place: who may talk to whom, on which port.
//
//   rotation function ──5432──▶ database ◀──5432── web app instance
//          │                                         │  │   │
//          └──443──▶ Secrets Manager endpoint ◀──443─┘  │   └─443─▶ S3 (gateway: ECR layers, dnf)
//                                                       └─443─▶ ECR + SSM endpoints
//
// Every subnet is isolated: no internet gateway, no NAT. AWS APIs are reached
// through VPC endpoints only, and every security group starts with no egress.

import { Stack } from 'aws-cdk-lib';
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
  readonly dbPort: number;
  readonly logRetentionDays: number;
  readonly encryptionKey?: kms.IKey;
  /** The region's S3 prefix list (`com.amazonaws.<region>.s3`); looked up when absent. */
  readonly s3PrefixListId?: string;
}

export const SUBNETS = { database: 'database', rotation: 'rotation', app: 'app' } as const;

export class Network extends Construct {
  readonly vpc: ec2.Vpc;
  readonly databaseSecurityGroup: ec2.SecurityGroup;
  readonly rotationSecurityGroup: ec2.SecurityGroup;
  readonly appSecurityGroup: ec2.SecurityGroup;
  readonly secretsManagerEndpoint: ec2.InterfaceVpcEndpoint;
  readonly secretsManagerEndpointSecurityGroup: ec2.SecurityGroup;
  readonly hostEndpointsSecurityGroup: ec2.SecurityGroup;
  readonly s3Endpoint: ec2.GatewayVpcEndpoint;
  readonly flowLogGroup: logs.LogGroup;
  /** The one subnet the web app instance and its ECR/SSM endpoints live in. */
  readonly appSubnet: ec2.ISubnet;

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
    this.appSubnet = this.vpc.selectSubnets({ subnetGroupName: SUBNETS.app }).subnets[0];

    this.flowLogGroup = new logs.LogGroup(this, 'FlowLogs', {
      retention: props.logRetentionDays as logs.RetentionDays,
      encryptionKey: props.encryptionKey,
    });
    this.vpc.addFlowLog('FlowLog', {
      destination: ec2.FlowLogDestination.toCloudWatchLogs(this.flowLogGroup),
      trafficType: ec2.FlowLogTrafficType.ALL,
    });

    const sg = (name: string, description: string) =>
      new ec2.SecurityGroup(this, name, { vpc: this.vpc, description, allowAllOutbound: false });
    this.databaseSecurityGroup = sg('DatabaseSg', 'PostgreSQL: reachable from the rotation function and the web app only');
    this.rotationSecurityGroup = sg('RotationSg', 'Rotation functions: database port and Secrets Manager endpoint only');
    this.appSecurityGroup = sg('AppSg', 'Web app instance: app port from the configured CIDR; database and AWS endpoints out');
    this.secretsManagerEndpointSecurityGroup = sg('SecretsManagerEndpointSg', 'Secrets Manager endpoint: HTTPS from the function and the app');
    this.hostEndpointsSecurityGroup = sg('HostEndpointsSg', 'ECR and SSM endpoints: HTTPS from the web app instance only');

    const db = ec2.Port.tcp(props.dbPort);
    const https = ec2.Port.tcp(443);
    this.rotationSecurityGroup.connections.allowTo(this.databaseSecurityGroup, db, 'rotation function to PostgreSQL');
    this.appSecurityGroup.connections.allowTo(this.databaseSecurityGroup, db, 'web app to PostgreSQL');
    this.rotationSecurityGroup.connections.allowTo(this.secretsManagerEndpointSecurityGroup, https, 'rotation function to Secrets Manager');
    this.appSecurityGroup.connections.allowTo(this.secretsManagerEndpointSecurityGroup, https, 'web app to Secrets Manager');
    this.appSecurityGroup.connections.allowTo(this.hostEndpointsSecurityGroup, https, 'web app host to ECR and SSM');
    this.appSecurityGroup.addIngressRule(ec2.Peer.ipv4(props.appIngressCidr), ec2.Port.tcp(props.appPort), 'app port from the configured CIDR');

    this.secretsManagerEndpoint = this.vpc.addInterfaceEndpoint('SecretsManager', {
      service: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
      privateDnsEnabled: true,
      open: false,
      securityGroups: [this.secretsManagerEndpointSecurityGroup],
      subnets: { subnetGroupName: SUBNETS.rotation },
    });

    // The instance needs ECR (image pull) and SSM (operator access). It lives in
    // one subnet, so these endpoints are created in that subnet's zone only.
    const hostServices: Record<string, ec2.InterfaceVpcEndpointAwsService> = {
      EcrApi: ec2.InterfaceVpcEndpointAwsService.ECR,
      EcrDocker: ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
      Ssm: ec2.InterfaceVpcEndpointAwsService.SSM,
      SsmMessages: ec2.InterfaceVpcEndpointAwsService.SSM_MESSAGES,
      Ec2Messages: ec2.InterfaceVpcEndpointAwsService.EC2_MESSAGES,
    };
    for (const [name, service] of Object.entries(hostServices)) {
      this.vpc.addInterfaceEndpoint(name, {
        service,
        privateDnsEnabled: true,
        open: false,
        securityGroups: [this.hostEndpointsSecurityGroup],
        subnets: { subnets: [this.appSubnet] },
      });
    }

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
        ],
        resources: secretArns,
        conditions: { StringEquals: { 'aws:PrincipalAccount': Stack.of(this).account } },
      }),
    );
  }
}
