// The extract function of the Sluice construct (its `extract` prop), as template.yaml's
// EnableExtract: the pipeline's tables with a [tables.source] section read from their shards
// (MySQL, MariaDB, PostgreSQL) on a schedule into <raw_prefix>shard=<id>/ as gzip JSON lines,
// which the transform's raw/ notification already carries on. docs/EXTRACT.md is the reference.
//
// Resources are created directly in the Sluice construct (no sub-construct), so their logical
// ids match template.yaml's for the parity check.
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { RustFunction } from 'cargo-lambda-cdk';
import { Construct } from 'constructs';
import type { CdcContext } from './cdc';

/** What the Sluice construct shares with extract: what it shares with the CDC path, and the alarm topic. */
export interface ExtractContext extends CdcContext {
  readonly alarmTopicArn: string;
}

/** Extraction from OLTP shards (the pipeline's `[tables.source]` sections). */
export interface SluiceExtractProps {
  /** How often extract reads what changed on each shard. @default events.Schedule.rate(Duration.hours(1)) */
  readonly schedule?: events.Schedule;
  /** extract's timeout; each shard stops after a whole page before it. @default Duration.seconds(900) */
  readonly timeout?: Duration;
  /** Memory (MB). @default 1024 */
  readonly memorySize?: number;
  /** ARNs of the shards' Secrets Manager secrets (each shard's `secret`, RDS layout). @default none */
  readonly shardSecretArns?: string[];
  /**
   * Subnets extract runs in to reach the shards; they need a route to S3 and Secrets Manager
   * (README, "Extract").
   * @default no VPC
   */
  readonly subnetIds?: string[];
  /** Security groups of extract in the VPC (with `subnetIds`). */
  readonly securityGroupIds?: string[];
  /** Alarm when a shard's newest extracted row is older than this (ExtractLagSeconds). @default Duration.hours(3) */
  readonly lagAlarm?: Duration;
}

/** What the extract path deployed. */
export interface SluiceExtractResources {
  readonly extractFunction: lambda.Function;
}

const allow = (sid: string, actions: string[], resources: string[]) =>
  new iam.PolicyStatement({ sid, actions, resources });

/** Adds extract, its schedule and its alarms to `scope`. */
export function addExtract(scope: Construct, props: SluiceExtractProps, ctx: ExtractContext): SluiceExtractResources {
  const subnets = props.subnetIds ?? [];
  const groups = props.securityGroupIds ?? [];
  if ((subnets.length === 0) !== (groups.length === 0)) {
    throw new Error('Sluice: extract.subnetIds and extract.securityGroupIds go together (extract in a VPC needs both)');
  }
  const name = `${ctx.prefix}-extract`;
  const statements = [
    ctx.logsStatement(name),
    allow('ReadPipeline', ['s3:GetObject'], [ctx.pipelineArn]),
    // The parts: written once each; the last part of an unfinished range is read back to
    // continue after its last row; a part above 16 MiB goes up as a multipart upload.
    allow('RawParts', ['s3:PutObject', 's3:GetObject', 's3:AbortMultipartUpload'], [ctx.objects('raw/')]),
    // Each shard's lease and state.json (conditional writes; never deleted).
    allow('ExtractState', ['s3:GetObject', 's3:PutObject'], [ctx.objects('state/extract/')]),
    // Listing: the parts of an unfinished range; a missing lease or state reads as 404.
    allow('ListLake', ['s3:ListBucket'], [ctx.bucketArn]),
  ];
  const secrets = props.shardSecretArns ?? [];
  if (secrets.length > 0) {
    statements.push(allow('ShardSecrets', ['secretsmanager:GetSecretValue'], secrets));
  }
  if (subnets.length > 0) {
    // Lambda manages the function's network interfaces with its role (as for wal-decoder).
    statements.push(allow('VpcNetworkInterfaces', [
      'ec2:CreateNetworkInterface', 'ec2:DescribeNetworkInterfaces', 'ec2:DescribeSubnets',
      'ec2:DeleteNetworkInterface', 'ec2:AssignPrivateIpAddresses', 'ec2:UnassignPrivateIpAddresses',
    ], ['*']));
  }
  const logGroup = new logs.LogGroup(scope, 'ExtractLogGroup', {
    logGroupName: `/aws/lambda/${name}`,
    retention: ctx.logRetention,
    removalPolicy: RemovalPolicy.DESTROY,
  });
  const role = new iam.Role(scope, 'ExtractFunctionRole', {
    description: 'extract function (least privilege; README "IAM")',
    assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
    inlinePolicies: { extract: new iam.PolicyDocument({ statements }) },
  });
  const fn = new RustFunction(scope, 'ExtractFunction', {
    functionName: name,
    description: "tables from their shards (what changed since each shard's watermark, or a full dump) -> gzip JSON lines in raw/<table>/shard=<id>/",
    manifestPath: ctx.manifestPath,
    binaryName: 'extract',
    runtime: 'provided.al2023',
    architecture: lambda.Architecture.ARM_64,
    role: role.withoutPolicyUpdates(),
    environment: ctx.environment,
    timeout: props.timeout ?? Duration.seconds(900),
    memorySize: props.memorySize ?? 1024,
    // Scheduled runs never overlap; a `sluice extract` beside them is kept apart by the
    // shards' leases.
    reservedConcurrentExecutions: 1,
    // A failed run is tried again twice, a minute or two later (a retry reads only what
    // changed since); a tick throttled behind a running run waits at most half an hour.
    retryAttempts: 2,
    maxEventAge: Duration.minutes(30),
    loggingFormat: lambda.LoggingFormat.JSON,
    applicationLogLevelV2: lambda.ApplicationLogLevel.INFO,
    systemLogLevelV2: lambda.SystemLogLevel.WARN,
  });
  fn.node.addDependency(logGroup);
  const cfn = fn.node.defaultChild as lambda.CfnFunction;
  cfn.addMetadata('Sluice:Binary', 'extract');
  // Plain ids, as template.yaml's parameters take them (no VPC lookup at synthesis).
  if (subnets.length > 0) cfn.vpcConfig = { subnetIds: subnets, securityGroupIds: groups };
  new events.Rule(scope, 'ExtractSchedule', {
    description: 'reads what changed on every shard (extract)',
    schedule: props.schedule ?? events.Schedule.rate(Duration.hours(1)),
    targets: [new targets.LambdaFunction(fn)],
  });
  alarms(scope, props, ctx, fn);
  return { extractFunction: fn };
}

function alarms(scope: Construct, props: SluiceExtractProps, ctx: ExtractContext, fn: lambda.Function): void {
  // Throttles are not alarmed: with reserved concurrency 1, a tick that finds the previous
  // run still going is throttled by design.
  new cloudwatch.Alarm(scope, 'ExtractErrorsAlarm', {
    alarmDescription: "extract runs failed (a shard could not be read; its log line and the ExtractFailed metric name it; the other shards' work stands)",
    metric: fn.metricErrors({ period: Duration.minutes(5), statistic: 'Sum' }),
    evaluationPeriods: 1,
    threshold: 1,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
    treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
  }).addAlarmAction(ctx.alarmAction);
  // extract's EMF metric (namespace Sluice, dimensions Function, Table and Shard): a Metrics
  // Insights query takes the maximum over every table and shard, per hour, which no IMetric
  // expresses.
  new cloudwatch.CfnAlarm(scope, 'ExtractLagAlarm', {
    alarmDescription: "a shard's newest extracted row is older than extract.lagAlarm (extract falls behind, or the table was quiet that long)",
    metrics: [{
      id: 'lag',
      expression: 'SELECT MAX(ExtractLagSeconds) FROM SCHEMA("Sluice", "Function", "Table", "Shard") WHERE "Function" = \'extract\'',
      period: 3600,
      returnData: true,
    }],
    evaluationPeriods: 1,
    threshold: (props.lagAlarm ?? Duration.hours(3)).toSeconds(),
    comparisonOperator: 'GreaterThanThreshold',
    treatMissingData: 'notBreaching',
    alarmActions: [ctx.alarmTopicArn],
  });
}
