// The network path: isolated subnets, flow logs, every endpoint and its
// policy, and every security group rule, compared as complete sets.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NO_ENDPOINT_POLICY } from '../lib/network';
import { ARM_ONE_INSTANCE, DEFAULTS, LEAN, SINGLE_USER_CMK } from './configurations';
import { resourcesOfType, synth, type CfnTemplate, type Synthesised } from './helpers';

/** A security group's rules as readable strings, inline and standalone alike. */
function rules(json: CfnTemplate, sgLogicalId: string): { ingress: string[]; egress: string[] } {
  const groupRef = JSON.stringify({ 'Fn::GetAtt': [sgLogicalId, 'GroupId'] });
  const peer = (r: Record<string, any>): string => {
    if (r.CidrIp) return `cidr:${r.CidrIp}`;
    if (r.CidrIpv6) return `cidr6:${r.CidrIpv6}`;
    if (r.DestinationPrefixListId) return `pl:${r.DestinationPrefixListId}`;
    if (r.SourcePrefixListId) return `pl:${r.SourcePrefixListId}`;
    const sg = r.SourceSecurityGroupId ?? r.DestinationSecurityGroupId;
    if (sg) return `sg:${sg['Fn::GetAtt'][0]}`;
    throw new Error(`unknown peer in ${JSON.stringify(r)}`);
  };
  const fmt = (r: Record<string, any>) => `${r.IpProtocol}/${r.FromPort}-${r.ToPort} ${peer(r)}`;
  const sg = json.Resources[sgLogicalId];
  assert.equal(sg.Type, 'AWS::EC2::SecurityGroup');
  const isPlaceholder = (r: Record<string, any>) => r.CidrIp === '255.255.255.255/32' && r.IpProtocol === 'icmp';
  const ingress = ((sg.Properties!.SecurityGroupIngress ?? []) as Record<string, any>[]).map(fmt);
  // CDK writes "egress to 255.255.255.255/32, icmp 252-86" when a group has no egress at all.
  const egress = ((sg.Properties!.SecurityGroupEgress ?? []) as Record<string, any>[]).filter((r) => !isPlaceholder(r)).map(fmt);
  for (const [, r] of resourcesOfType(json, 'AWS::EC2::SecurityGroupIngress')) {
    if (JSON.stringify(r.GroupId) === groupRef) ingress.push(fmt(r));
  }
  for (const [, r] of resourcesOfType(json, 'AWS::EC2::SecurityGroupEgress')) {
    if (JSON.stringify(r.GroupId) === groupRef) egress.push(fmt(r));
  }
  return { ingress: ingress.sort(), egress: egress.sort() };
}

function groups(s: Synthesised) {
  const n = s.stack.network;
  return {
    db: s.logicalId(n.databaseSecurityGroup),
    rotation: s.logicalId(n.rotationSecurityGroup),
    app: s.logicalId(n.appSecurityGroup),
    lb: n.loadBalancerSecurityGroup ? s.logicalId(n.loadBalancerSecurityGroup) : 'none',
    smEndpoint: s.logicalId(n.secretsManagerEndpointSecurityGroup),
    hostEndpoints: s.logicalId(n.hostEndpointsSecurityGroup),
  };
}

describe('security groups', () => {
  it('rotation function: egress to the database port and the Secrets Manager endpoint only, no ingress', () => {
    const s = synth(DEFAULTS);
    const g = groups(s);
    assert.deepEqual(rules(s.json, g.rotation), {
      ingress: [],
      egress: [`tcp/443-443 sg:${g.smEndpoint}`, `tcp/5432-5432 sg:${g.db}`].sort(),
    });
  });

  it('database: the PostgreSQL port from the function and the app only, no egress', () => {
    const s = synth(DEFAULTS);
    const g = groups(s);
    assert.deepEqual(rules(s.json, g.db), {
      ingress: [`tcp/5432-5432 sg:${g.app}`, `tcp/5432-5432 sg:${g.rotation}`].sort(),
      egress: [],
    });
  });

  it('Secrets Manager endpoint: HTTPS from the function and the app only, no egress', () => {
    const s = synth(DEFAULTS);
    const g = groups(s);
    assert.deepEqual(rules(s.json, g.smEndpoint), {
      ingress: [`tcp/443-443 sg:${g.app}`, `tcp/443-443 sg:${g.rotation}`].sort(),
      egress: [],
    });
    assert.deepEqual(rules(s.json, g.hostEndpoints), { ingress: [`tcp/443-443 sg:${g.app}`], egress: [] });
  });

  it('load balancer: its listener from the configured CIDR and from the instances (port forward); out to the app port only', () => {
    for (const [context, cidr] of [
      [DEFAULTS, '10.20.0.0/16'],
      [SINGLE_USER_CMK, '203.0.113.7/32'],
    ] as const) {
      const s = synth(context);
      const g = groups(s);
      assert.deepEqual(rules(s.json, g.lb), {
        ingress: [`tcp/80-80 cidr:${cidr}`, `tcp/80-80 sg:${g.app}`].sort(),
        egress: [`tcp/8080-8080 sg:${g.app}`],
      });
    }
  });

  it('web app: the app port from the load balancer only (not the admin port); out to the database, the endpoints, S3 and the listener', () => {
    for (const context of [DEFAULTS, SINGLE_USER_CMK]) {
      const s = synth(context);
      const g = groups(s);
      assert.deepEqual(rules(s.json, g.app), {
        ingress: [`tcp/8080-8080 sg:${g.lb}`],
        egress: [
          `tcp/5432-5432 sg:${g.db}`,
          `tcp/443-443 sg:${g.smEndpoint}`,
          `tcp/443-443 sg:${g.hostEndpoints}`,
          'tcp/443-443 pl:pl-6da54004',
          // AWS-StartPortForwardingSessionToRemoteHost through an instance to the internal load balancer.
          `tcp/80-80 sg:${g.lb}`,
        ].sort(),
      });
    }
  });

  it('lean: no load balancer and so no group for it; the instances take no ingress at all', () => {
    const s = synth(LEAN);
    const g = groups(s);
    assert.equal(s.stack.network.loadBalancerSecurityGroup, undefined);
    assert.equal(resourcesOfType(s.json, 'AWS::ElasticLoadBalancingV2::LoadBalancer').length, 0);
    assert.deepEqual(rules(s.json, g.app).ingress, []);
  });

  it('no security group anywhere admits 0.0.0.0/0 or allows all traffic', () => {
    const s = synth(DEFAULTS);
    for (const [id] of resourcesOfType(s.json, 'AWS::EC2::SecurityGroup')) {
      const r = rules(s.json, id);
      for (const rule of [...r.ingress, ...r.egress]) {
        assert.ok(!rule.includes('0.0.0.0/0'), `${id}: ${rule}`);
        assert.ok(!rule.startsWith('-1/'), `${id}: ${rule}`);
      }
    }
  });
});

describe('Secrets Manager endpoint', () => {
  it('is an interface endpoint with private DNS in the function subnets, guarded by its own group', () => {
    const s = synth(DEFAULTS);
    const g = groups(s);
    const endpoint = s.json.Resources[s.logicalId(s.stack.network.secretsManagerEndpoint)].Properties!;
    assert.equal(endpoint.ServiceName, 'com.amazonaws.eu-west-1.secretsmanager');
    assert.equal(endpoint.VpcEndpointType, 'Interface');
    assert.equal(endpoint.PrivateDnsEnabled, true);
    assert.deepEqual(endpoint.SecurityGroupIds, [{ 'Fn::GetAtt': [g.smEndpoint, 'GroupId'] }]);
    const rotationSubnets = s.stack.network.vpc.selectSubnets({ subnetGroupName: 'rotation' }).subnetIds.map(s.ref);
    assert.deepEqual(endpoint.SubnetIds, rotationSubnets);
  });

  it("carries this account's calls on this stack's three secrets only", () => {
    const s = synth(DEFAULTS);
    const endpoint = s.json.Resources[s.logicalId(s.stack.network.secretsManagerEndpoint)].Properties!;
    assert.deepEqual(endpoint.PolicyDocument.Statement, [
      {
        Sid: 'OnlyThisStacksSecrets',
        Effect: 'Allow',
        Principal: { AWS: '*' },
        Action: [
          'secretsmanager:DescribeSecret',
          'secretsmanager:GetSecretValue',
          'secretsmanager:ListSecretVersionIds',
          'secretsmanager:PutSecretValue',
          'secretsmanager:UpdateSecretVersionStage',
        ],
        Resource: [
          s.ref(s.stack.database.appSecret.secretArn),
          s.ref(s.stack.database.masterSecret.secretArn),
          s.ref(s.stack.database.ownerSecret.secretArn),
        ],
        Condition: { StringEquals: { 'aws:PrincipalAccount': '123456789012' } },
      },
    ]);
  });
});

/** The services of the VPC's interface endpoints, sorted. */
function interfaceEndpointServices(s: Synthesised): string[] {
  return resourcesOfType(s.json, 'AWS::EC2::VPCEndpoint')
    .filter(([, e]) => e.VpcEndpointType === 'Interface')
    .map(([, e]) => e.ServiceName as string)
    .sort();
}

describe("the instances' endpoints", () => {
  const policy = (s: Synthesised, name: keyof Synthesised['stack']['network']['hostEndpoints']) =>
    s.json.Resources[s.logicalId(s.stack.network.hostEndpoints[name]!)].Properties!;

  it('exist for ECR, SSM, SSM messages, CloudWatch Logs and CloudFormation, in both app subnets; no EC2 messages (Run Command)', () => {
    const s = synth(DEFAULTS);
    const services = interfaceEndpointServices(s);
    assert.deepEqual(services, [
      'com.amazonaws.eu-west-1.cloudformation',
      'com.amazonaws.eu-west-1.ecr.api',
      'com.amazonaws.eu-west-1.ecr.dkr',
      'com.amazonaws.eu-west-1.logs',
      'com.amazonaws.eu-west-1.secretsmanager',
      'com.amazonaws.eu-west-1.ssm',
      'com.amazonaws.eu-west-1.ssmmessages',
    ]);
    const appSubnets = s.stack.network.vpc.selectSubnets({ subnetGroupName: 'app' }).subnetIds.map(s.ref);
    assert.equal(appSubnets.length, 2);
    for (const name of Object.keys(s.stack.network.hostEndpoints) as (keyof typeof s.stack.network.hostEndpoints)[]) {
      assert.deepEqual(policy(s, name).SubnetIds, appSubnets, name);
      assert.equal(policy(s, name).PrivateDnsEnabled, true, name);
    }
  });

  it('lean: every endpoint in one zone, no SSM endpoints', () => {
    const s = synth(LEAN);
    const services = interfaceEndpointServices(s);
    assert.deepEqual(services, [
      'com.amazonaws.eu-west-1.cloudformation',
      'com.amazonaws.eu-west-1.ecr.api',
      'com.amazonaws.eu-west-1.ecr.dkr',
      'com.amazonaws.eu-west-1.logs',
      'com.amazonaws.eu-west-1.secretsmanager',
    ]);
    for (const [id, e] of resourcesOfType(s.json, 'AWS::EC2::VPCEndpoint')) {
      if (e.VpcEndpointType === 'Interface') assert.equal(e.SubnetIds.length, 1, id);
    }
    const role = s.json.Resources[s.logicalId(s.stack.webApp.role)].Properties!;
    assert.ok(!JSON.stringify(role).includes('ssm'), 'no Session Manager permissions without its endpoints');
  });

  it('every interface endpoint whose service accepts a policy has one, and none admits "*" actions; SSM messages has none', () => {
    // AWS's list (describe-vpc-endpoint-services, VpcEndpointPolicySupported):
    // ssmmessages does not accept an endpoint policy; a policy on it fails the
    // endpoint's creation and with it the first deployment.
    assert.deepEqual(NO_ENDPOINT_POLICY, ['SsmMessages']);
    for (const context of [DEFAULTS, SINGLE_USER_CMK, ARM_ONE_INSTANCE]) {
      const s = synth(context);
      for (const [id, e] of resourcesOfType(s.json, 'AWS::EC2::VPCEndpoint')) {
        if (String(e.ServiceName).endsWith('.ssmmessages')) {
          assert.equal(e.PolicyDocument, undefined, `${id}: ssmmessages takes no endpoint policy`);
          continue;
        }
        assert.ok(e.PolicyDocument, `${id} has no endpoint policy (full access)`);
        for (const st of e.PolicyDocument.Statement) {
          for (const a of [st.Action].flat()) assert.ok(!String(a).includes('*'), `${id}: ${a}`);
        }
      }
    }
  });

  it("serve the hosts' roles only (instances, migration), each for what the roles may do through it", () => {
    const s = synth(DEFAULTS);
    const instance = { 'Fn::GetAtt': [s.logicalId(s.stack.webApp.role), 'Arn'] };
    const migration = { 'Fn::GetAtt': [s.logicalId(s.stack.migration.role), 'Arn'] };
    const role = { ArnEquals: { 'aws:PrincipalArn': [instance, migration] } };
    const instanceOnly = { ArnEquals: { 'aws:PrincipalArn': instance } };
    const repo = { 'Fn::GetAtt': [s.logicalId(s.stack.image.repository), 'Arn'] };
    const pull = {
      Sid: 'PullTheAppImage',
      Effect: 'Allow',
      Principal: { AWS: '*' },
      Action: ['ecr:BatchCheckLayerAvailability', 'ecr:BatchGetImage', 'ecr:GetDownloadUrlForLayer'],
      Resource: repo,
      Condition: role,
    };
    assert.deepEqual(policy(s, 'EcrApi').PolicyDocument.Statement, [
      { Sid: 'LogInToEcr', Effect: 'Allow', Principal: { AWS: '*' }, Action: 'ecr:GetAuthorizationToken', Resource: '*', Condition: role },
      pull,
    ]);
    assert.deepEqual(policy(s, 'EcrDocker').PolicyDocument.Statement, [pull]);
    assert.deepEqual(policy(s, 'Ssm').PolicyDocument.Statement, [
      {
        Sid: 'RegisterWithSessionManager',
        Effect: 'Allow',
        Principal: { AWS: '*' },
        Action: 'ssm:UpdateInstanceInformation',
        Resource: '*',
        Condition: instanceOnly,
      },
    ]);
    assert.equal(policy(s, 'SsmMessages').PolicyDocument, undefined);
    assert.deepEqual(policy(s, 'Logs').PolicyDocument.Statement, [
      {
        Sid: 'WriteTheAppLog',
        Effect: 'Allow',
        Principal: { AWS: '*' },
        Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        Resource: s.ref(s.stack.webApp.logGroup.logGroupArn),
        Condition: role,
      },
    ]);
    assert.deepEqual(policy(s, 'CloudFormation').PolicyDocument.Statement, [
      {
        Sid: 'SignalThisStack',
        Effect: 'Allow',
        Principal: { AWS: '*' },
        Action: 'cloudformation:SignalResource',
        Resource: { Ref: 'AWS::StackId' },
        Condition: role,
      },
    ]);
  });
});

describe('S3 gateway endpoint', () => {
  it('serves the web app subnets, and only object reads from the ECR layer and Amazon Linux repository buckets', () => {
    const s = synth(DEFAULTS);
    const endpoint = s.json.Resources[s.logicalId(s.stack.network.s3Endpoint)].Properties!;
    assert.equal(endpoint.VpcEndpointType, 'Gateway');
    assert.deepEqual(
      endpoint.RouteTableIds,
      s.stack.network.vpc.selectSubnets({ subnetGroupName: 'app' }).subnets.map((subnet) => s.ref(subnet.routeTable.routeTableId)),
    );
    assert.deepEqual(endpoint.PolicyDocument.Statement, [
      {
        Sid: 'EcrLayersAndAmazonLinuxRepositories',
        Effect: 'Allow',
        Principal: { AWS: '*' },
        Action: 's3:GetObject',
        Resource: ['arn:aws:s3:::al2023-repos-eu-west-1-de612dc2/*', 'arn:aws:s3:::prod-eu-west-1-starport-layer-bucket/*'],
      },
    ]);
  });
});

describe('VPC', () => {
  it('has isolated subnets only: no internet gateway, no NAT, no public IPs', () => {
    const s = synth(DEFAULTS);
    for (const type of ['AWS::EC2::InternetGateway', 'AWS::EC2::NatGateway', 'AWS::EC2::EIP', 'AWS::EC2::EgressOnlyInternetGateway']) {
      assert.equal(resourcesOfType(s.json, type).length, 0, type);
    }
    const subnets = resourcesOfType(s.json, 'AWS::EC2::Subnet');
    assert.equal(subnets.length, 6);
    for (const [id, subnet] of subnets) assert.equal(subnet.MapPublicIpOnLaunch, false, id);
    for (const [id, route] of resourcesOfType(s.json, 'AWS::EC2::Route')) {
      assert.fail(`${id} routes ${route.DestinationCidrBlock} somewhere: isolated subnets have no routes`);
    }
  });

  it('logs all traffic to a log group with retention', () => {
    for (const context of [DEFAULTS, SINGLE_USER_CMK]) {
      const s = synth(context);
      const flowLogGroup = s.logicalId(s.stack.network.flowLogGroup);
      s.template.hasResourceProperties('AWS::EC2::FlowLog', {
        ResourceType: 'VPC',
        ResourceId: s.ref(s.stack.network.vpc.vpcId),
        TrafficType: 'ALL',
        LogDestinationType: 'cloud-watch-logs',
        LogGroupName: { Ref: flowLogGroup },
      });
      assert.equal(s.json.Resources[flowLogGroup].Properties!.RetentionInDays, 365);
      if (s.stack.key) {
        assert.deepEqual(s.json.Resources[flowLogGroup].Properties!.KmsKeyId, { 'Fn::GetAtt': [s.logicalId(s.stack.key), 'Arn'] });
      }
    }
  });
});
