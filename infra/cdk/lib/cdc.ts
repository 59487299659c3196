// The CDC path of the Sluice construct (its `cdc` prop), as template.yaml's EnableCdc: the
// source's replication slot -> wal-decoder (scheduled) -> the change stream -> cdc-sink ->
// raw/cdc/<table>/, which the transform's raw/ notification already carries on. docs/CDC.md is
// the contract between the stages.
//
// Resources are created directly in the Sluice construct (no sub-construct), so their logical
// ids match template.yaml's for the parity check.
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kinesis from 'aws-cdk-lib/aws-kinesis';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { KinesisEventSource, SqsDlq } from 'aws-cdk-lib/aws-lambda-event-sources';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { RustFunction } from 'cargo-lambda-cdk';
import { Construct } from 'constructs';

/** Change data capture from PostgreSQL (the pipeline's `[cdc]` section). */
export interface SluiceCdcProps {
  /** Capacity mode of the change stream. @default kinesis.StreamMode.PROVISIONED */
  readonly streamMode?: kinesis.StreamMode;
  /** Shards of the change stream in PROVISIONED mode (1 MB/s or 1000 records/s of writes each). @default 1 */
  readonly shardCount?: number;
  /** How often wal-decoder reads the slot. @default events.Schedule.rate(Duration.minutes(1)) */
  readonly schedule?: events.Schedule;
  /** wal-decoder's timeout; it stops at a commit boundary before it. @default Duration.seconds(300) */
  readonly decoderTimeout?: Duration;
  /** Secrets Manager secret of the source database ([cdc].source_secret, RDS layout). */
  readonly sourceSecretArn?: string;
  /**
   * Subnets wal-decoder runs in to reach the source database; they need a route to S3,
   * Kinesis, Secrets Manager and CloudWatch Logs (README, "Deploying with CDK").
   * @default no VPC
   */
  readonly subnetIds?: string[];
  /** Security groups of wal-decoder in the VPC (with `subnetIds`). */
  readonly securityGroupIds?: string[];
  /** Alarm when the slot's lag (SlotLagBytes) stays above this for 15 minutes. @default 1 GiB */
  readonly slotLagAlarmBytes?: number;
  /** Alarm when cdc-sink's oldest unwritten change is older than this. @default Duration.minutes(10) */
  readonly iteratorAgeAlarm?: Duration;
}

/** What the CDC path deployed. */
export interface SluiceCdcResources {
  readonly stream: kinesis.Stream;
  readonly walDecoderFunction: lambda.Function;
  readonly cdcSinkFunction: lambda.Function;
  /** Batches cdc-sink failed every retry on (the on-failure destination). */
  readonly cdcSinkDlq: sqs.Queue;
}

/** What the Sluice construct shares with its CDC path. */
export interface CdcContext {
  readonly prefix: string;
  readonly manifestPath: string;
  readonly logRetention: logs.RetentionDays;
  readonly environment: Record<string, string>;
  readonly pipelineArn: string;
  readonly bucketArn: string;
  /** ARN of the objects under a prefix of the lake. */
  objects(prefix: string): string;
  /** The statement letting the Lambda service write the named function's logs. */
  logsStatement(functionName: string): iam.PolicyStatement;
  readonly alarmAction: cloudwatch.IAlarmAction;
}

const allow = (sid: string, actions: string[], resources: string[], conditions?: Record<string, unknown>) =>
  new iam.PolicyStatement({ sid, actions, resources, conditions });

/** Adds the change stream, wal-decoder, cdc-sink and their alarms to `scope`. */
export function addCdc(scope: Construct, props: SluiceCdcProps, ctx: CdcContext): SluiceCdcResources {
  const subnets = props.subnetIds ?? [];
  const groups = props.securityGroupIds ?? [];
  if ((subnets.length === 0) !== (groups.length === 0)) {
    throw new Error('Sluice: cdc.subnetIds and cdc.securityGroupIds go together (wal-decoder in a VPC needs both)');
  }
  const mode = props.streamMode ?? kinesis.StreamMode.PROVISIONED;
  if (mode === kinesis.StreamMode.ON_DEMAND && props.shardCount !== undefined) {
    throw new Error('Sluice: cdc.shardCount applies to a PROVISIONED stream only');
  }
  // Encrypted with the AWS-managed key: no key policy, no kms: permission for this account.
  const stream = new kinesis.Stream(scope, 'CdcStream', {
    streamMode: mode,
    shardCount: mode === kinesis.StreamMode.PROVISIONED ? props.shardCount ?? 1 : undefined,
    retentionPeriod: Duration.hours(24),
    encryption: kinesis.StreamEncryption.MANAGED,
    // Change events in flight only (24 hours): deleted with the stack, as template.yaml's.
    removalPolicy: RemovalPolicy.DESTROY,
  });
  const walDecoderFunction = walDecoder(scope, props, ctx, stream, subnets, groups);
  const { fn: cdcSinkFunction, dlq: cdcSinkDlq } = cdcSink(scope, ctx, stream);
  alarms(scope, props, ctx, walDecoderFunction, cdcSinkFunction, cdcSinkDlq);
  return { stream, walDecoderFunction, cdcSinkFunction, cdcSinkDlq };
}

function logGroup(scope: Construct, id: string, name: string, ctx: CdcContext): logs.LogGroup {
  return new logs.LogGroup(scope, id, {
    logGroupName: `/aws/lambda/${name}`,
    retention: ctx.logRetention,
    removalPolicy: RemovalPolicy.DESTROY,
  });
}

function role(scope: Construct, id: string, name: string, statements: iam.PolicyStatement[]): iam.Role {
  return new iam.Role(scope, id, {
    description: `${name} function (least privilege; README "IAM")`,
    assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
    inlinePolicies: { [name]: new iam.PolicyDocument({ statements }) },
  });
}

const logging = {
  loggingFormat: lambda.LoggingFormat.JSON,
  applicationLogLevelV2: lambda.ApplicationLogLevel.INFO,
  systemLogLevelV2: lambda.SystemLogLevel.WARN,
};

function walDecoder(
  scope: Construct, props: SluiceCdcProps, ctx: CdcContext, stream: kinesis.Stream, subnets: string[], groups: string[],
): lambda.Function {
  const name = `${ctx.prefix}-wal-decoder`;
  const statements = [
    ctx.logsStatement(name),
    allow('ReadPipeline', ['s3:GetObject'], [ctx.pipelineArn]),
    // How far into a transaction too large for one run the stream has acknowledged.
    allow('CdcState', ['s3:GetObject', 's3:PutObject'], [ctx.objects('state/cdc/')]),
    // A change too large for one Kinesis record, written before its pointer is put.
    allow('Spill', ['s3:PutObject'], [ctx.objects('spill/cdc/')]),
    // Listing: a missing state/cdc/ record reads as 404 (NotFound), not 403.
    allow('ListLake', ['s3:ListBucket'], [ctx.bucketArn]),
    allow('PutChanges', ['kinesis:PutRecords'], [stream.streamArn]),
  ];
  if (props.sourceSecretArn) {
    statements.push(allow('SourceSecret', ['secretsmanager:GetSecretValue'], [props.sourceSecretArn]));
  }
  if (subnets.length > 0) {
    // Lambda manages the function's network interfaces with its role (what
    // AWSLambdaVPCAccessExecutionRole grants, without its logs:*); EC2 offers no narrower
    // resource for the Describe actions, and the interfaces' ids are not known in advance.
    statements.push(allow('VpcNetworkInterfaces', [
      'ec2:CreateNetworkInterface', 'ec2:DescribeNetworkInterfaces', 'ec2:DescribeSubnets',
      'ec2:DeleteNetworkInterface', 'ec2:AssignPrivateIpAddresses', 'ec2:UnassignPrivateIpAddresses',
    ], ['*']));
  }
  const logGroupOf = logGroup(scope, 'WalDecoderLogGroup', name, ctx);
  const fn = new RustFunction(scope, 'WalDecoderFunction', {
    functionName: name,
    description: "the source's logical replication slot (pgoutput) -> change events on the stream; advances the slot once they are acknowledged",
    manifestPath: ctx.manifestPath,
    binaryName: 'wal-decoder',
    runtime: 'provided.al2023',
    architecture: lambda.Architecture.ARM_64,
    role: role(scope, 'WalDecoderFunctionRole', 'wal-decoder', statements).withoutPolicyUpdates(),
    // The stream this construct created overrides the pipeline's [cdc].stream.
    environment: { ...ctx.environment, SLUICE_CDC_STREAM: stream.streamName },
    timeout: props.decoderTimeout ?? Duration.seconds(300),
    memorySize: 512,
    // One run at a time: a slot has one reader, and two runs would put the same changes twice.
    reservedConcurrentExecutions: 1,
    // A tick that finds the previous run still going is throttled: dropped after a minute
    // rather than retried for hours; the next tick comes anyway.
    retryAttempts: 0,
    maxEventAge: Duration.seconds(60),
    ...logging,
  });
  fn.node.addDependency(logGroupOf);
  const cfn = fn.node.defaultChild as lambda.CfnFunction;
  cfn.addMetadata('Sluice:Binary', 'wal-decoder');
  // Plain ids, as template.yaml's parameters take them (no VPC lookup at synthesis).
  if (subnets.length > 0) cfn.vpcConfig = { subnetIds: subnets, securityGroupIds: groups };
  new events.Rule(scope, 'WalDecoderSchedule', {
    description: 'reads the replication slot (wal-decoder)',
    schedule: props.schedule ?? events.Schedule.rate(Duration.minutes(1)),
    targets: [new targets.LambdaFunction(fn)],
  });
  return fn;
}

// cdc-sink runs outside any VPC: it reaches only Kinesis (through its event source mapping) and S3.
function cdcSink(scope: Construct, ctx: CdcContext, stream: kinesis.Stream): { fn: lambda.Function; dlq: sqs.Queue } {
  const name = `${ctx.prefix}-cdc-sink`;
  // Batches that failed every retry: the shard and sequence range, not the changes.
  const dlq = new sqs.Queue(scope, 'CdcSinkDLQ', {
    retentionPeriod: Duration.days(14),
    encryption: sqs.QueueEncryption.SQS_MANAGED,
    enforceSSL: true,
  });
  const statements = [
    ctx.logsStatement(name),
    allow('ReadPipeline', ['s3:GetObject'], [ctx.pipelineArn]),
    // The event source mapping reads the stream with the function's role.
    allow('ReadStream', [
      'kinesis:GetRecords', 'kinesis:GetShardIterator', 'kinesis:DescribeStream', 'kinesis:DescribeStreamSummary', 'kinesis:ListShards',
    ], [stream.streamArn]),
    // Lambda sends a batch that failed every retry here with the function's role.
    allow('FailureDestination', ['sqs:SendMessage'], [dlq.queueArn]),
    // Written, never read back or deleted: a redelivered batch overwrites its keys.
    allow('WriteRawChanges', ['s3:PutObject'], [ctx.objects('raw/cdc/'), ctx.objects('quarantine/_cdc-sink/')]),
    allow('ReadSpill', ['s3:GetObject'], [ctx.objects('spill/cdc/')]),
    // S3 answers a GET of a missing key with 404 only to a caller that may list it (403
    // otherwise): a missing spill object is quarantined, an access error retried. S3 checks
    // the listing with s3:prefix = the key, so spill/cdc/ is enough.
    allow('ListSpill', ['s3:ListBucket'], [ctx.bucketArn], { StringLike: { 's3:prefix': 'spill/cdc/*' } }),
  ];
  const logGroupOf = logGroup(scope, 'CdcSinkLogGroup', name, ctx);
  const fn = new RustFunction(scope, 'CdcSinkFunction', {
    functionName: name,
    description: 'change events (Kinesis) -> JSON lines in raw/cdc/<table>/, spilled changes read back, bad records to quarantine/_cdc-sink/',
    manifestPath: ctx.manifestPath,
    binaryName: 'cdc-sink',
    runtime: 'provided.al2023',
    architecture: lambda.Architecture.ARM_64,
    role: role(scope, 'CdcSinkFunctionRole', 'cdc-sink', statements).withoutPolicyUpdates(),
    environment: ctx.environment,
    timeout: Duration.seconds(300),
    memorySize: 512,
    ...logging,
  });
  fn.node.addDependency(logGroupOf);
  (fn.node.defaultChild as lambda.CfnFunction).addMetadata('Sluice:Binary', 'cdc-sink');
  // Batches of up to 1000 changes, waiting at most 30 s (fewer, larger raw/cdc/ objects); a
  // batch that keeps failing is split until the failing records are alone, then its range
  // goes to the DLQ after 10 retries.
  fn.addEventSource(new KinesisEventSource(stream, {
    startingPosition: lambda.StartingPosition.TRIM_HORIZON,
    batchSize: 1000,
    maxBatchingWindow: Duration.seconds(30),
    reportBatchItemFailures: true,
    bisectBatchOnError: true,
    retryAttempts: 10,
    onFailure: new SqsDlq(dlq),
  }));
  return { fn, dlq };
}

function alarms(
  scope: Construct, props: SluiceCdcProps, ctx: CdcContext, decoder: lambda.Function, sink: lambda.Function, dlq: sqs.Queue,
): void {
  const period = Duration.minutes(5);
  const { GREATER_THAN_OR_EQUAL_TO_THRESHOLD: atLeast, GREATER_THAN_THRESHOLD: above } = cloudwatch.ComparisonOperator;
  const alarm = (id: string, alarmDescription: string, metric: cloudwatch.IMetric, threshold = 1,
    comparisonOperator = atLeast, evaluationPeriods = 1) =>
    new cloudwatch.Alarm(scope, id, {
      alarmDescription,
      metric,
      evaluationPeriods,
      threshold,
      comparisonOperator,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    }).addAlarmAction(ctx.alarmAction);
  // wal-decoder's throttles are not alarmed: with reserved concurrency 1, a tick that finds
  // the previous run still going is throttled by design.
  alarm('WalDecoderErrorsAlarm', "wal-decoder runs failed (the slot did not advance past the failed run's changes; the next run retries them)",
    decoder.metricErrors({ period, statistic: 'Sum' }));
  // wal-decoder's EMF line: namespace Sluice, dimension Function = "wal-decoder".
  alarm('CdcSlotLagAlarm', "the replication slot's lag stayed above cdc.slotLagAlarmBytes for 15 minutes (the source keeps that much WAL for wal-decoder)",
    new cloudwatch.Metric({ namespace: 'Sluice', metricName: 'SlotLagBytes', dimensionsMap: { Function: 'wal-decoder' }, statistic: 'Maximum', period }),
    props.slotLagAlarmBytes ?? 1024 ** 3, above, 3);
  alarm('CdcSinkErrorsAlarm', 'cdc-sink invocations failed (the batch is retried, split, then sent to CdcSinkDLQ)',
    sink.metricErrors({ period, statistic: 'Sum' }));
  alarm('CdcIteratorAgeAlarm', 'cdc-sink is behind the change stream by more than cdc.iteratorAgeAlarm',
    sink.metric('IteratorAge', { period, statistic: 'Maximum' }), (props.iteratorAgeAlarm ?? Duration.minutes(10)).toMilliseconds(), above);
  alarm('CdcSinkDLQAlarm', 'change batches that failed every cdc-sink retry wait in CdcSinkDLQ (re-read them from the stream before it drops them)',
    dlq.metricApproximateNumberOfMessagesVisible({ period, statistic: 'Maximum' }));
}
