// The configurations the tests synthesise, and the ones scripts/synth.ts writes
// for cfn-lint and checkov: the same list, so every configuration the README
// offers is checked by cdk-nag (at synthesis), the assertions, cfn-lint and
// checkov alike. Between them every setting in cdk/README.md's table is flipped
// away from its default at least once. Values are strings, as they arrive from
// `cdk deploy -c key=value`.

/** cdk.json's defaults: alternating users, master secret rotated too, AWS-managed keys, two instances. */
export const DEFAULTS: Record<string, unknown> = {};

/** Every opt-in and opt-out flipped. */
export const SINGLE_USER_CMK: Record<string, unknown> = {
  rotationStrategy: 'single-user',
  customerManagedKey: 'true',
  rotateMasterSecret: 'false',
  rotationDays: '7',
  appIngressCidr: '203.0.113.7/32',
  deletionProtection: 'false',
  multiAz: 'true',
  alertEmail: 'ops@example.com',
  fleetSize: '3',
};

/** The other axes: CPU architectures, one instance, another stack name and engine version. */
export const ARM_ONE_INSTANCE: Record<string, unknown> = {
  webAppArchitecture: 'arm64',
  rotationFnArchitecture: 'x86_64',
  fleetSize: '1',
  stackName: 'Notes-Prod',
  postgresVersion: '16.9',
  alertEmail: 'ops@example.com',
};

/** The lean configuration (cdk/README.md's cost table): endpoints in one zone, no Session Manager endpoints, no load balancer. */
export const LEAN: Record<string, unknown> = {
  endpointZones: '1',
  sessionManager: 'false',
  loadBalancer: 'false',
  fleetSize: '1',
  rotationDays: '1',
};

/**
 * Name -> context, for scripts/synth.ts. A name ending in `-default-keys` is
 * checked by checkov with the extra skips of compliance/checkov-skips-default-keys.yaml.
 */
export const CONFIGURATIONS: Record<string, Record<string, unknown>> = {
  'alternating-users-default-keys': DEFAULTS,
  'single-user-cmk': SINGLE_USER_CMK,
  'arm64-one-instance-default-keys': ARM_ONE_INSTANCE,
  'lean-default-keys': LEAN,
};
