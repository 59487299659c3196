// The Sluice suite as one construct: the same resources, triggers and least-privilege roles as
// template.yaml (checked by test/parity.test.ts), for users who deploy with CDK.
//
// As in template.yaml, every ARN a role names is built from the bucket *name*, never from the
// bucket resource: the bucket's notifications point at the function and the queue, so a policy
// referencing the bucket would close a dependency cycle.
//
// The functions get their roles through `withoutPolicyUpdates()`: CDK's grants (the SQS event
// source's, the failure destination's) would add actions template.yaml does not allow
// (sqs:GetQueueUrl, sqs:ChangeMessageVisibility). Each role's inline policy lists what the
// function needs, statement for statement as in template.yaml.
import * as path from 'node:path';
import { Duration, RemovalPolicy, Size, Stack, Token, Validations } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as glue from 'aws-cdk-lib/aws-glue';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as destinations from 'aws-cdk-lib/aws-lambda-destinations';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as s3assets from 'aws-cdk-lib/aws-s3-assets';
import * as s3n from 'aws-cdk-lib/aws-s3-notifications';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subs from 'aws-cdk-lib/aws-sns-subscriptions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { RustFunction } from 'cargo-lambda-cdk';
import { Construct } from 'constructs';
import { addCdc, SluiceCdcProps, SluiceCdcResources } from './cdc';
import { addExtract, SluiceExtractProps, SluiceExtractResources } from './extract';
import { acknowledgeNagFindings } from './nag';

/** The warehouse the loader writes: a Serverless workgroup or a provisioned cluster. */
export interface RedshiftTarget {
  /** ARN of the Redshift Serverless workgroup (set this or `clusterIdentifier`). */
  readonly workgroupArn?: string;
  /** Identifier of the provisioned cluster (set this or `workgroupArn`). */
  readonly clusterIdentifier?: string;
  /** Database the loader writes (the pipeline's [redshift].database). @default 'dev' */
  readonly database?: string;
  /** Secrets Manager secret with the database credentials ([redshift].secret). */
  readonly secretArn?: string;
  /** Database user for temporary IAM credentials on a cluster ([redshift].db_user). */
  readonly dbUser?: string;
  /** Role COPY assumes ([redshift].copy_iam_role); omitted, the construct creates one. */
  readonly copyRoleArn?: string;
}

export interface SluiceProps {
  /** Name of the lake bucket (raw/, curated/, manifests/, loads/, quarantine/, state/). */
  readonly lakeBucketName: string;
  /**
   * The bucket exists already (created outside this construct): it is imported by name and its
   * notifications are added by CDK's notifications custom resource; no lifecycle rules or
   * bucket policy are set on it. @default false (the construct creates the bucket, retained on
   * delete)
   */
  readonly existingLakeBucket?: boolean;
  /** s3://BUCKET/KEY of the pipeline file (SLUICE_PIPELINE). */
  readonly pipelineLocation: string;
  readonly redshift: RedshiftTarget;
  /** Secret holding the HMAC key of the pipeline's [hash_key]; omit when no column is hashed. */
  readonly hashKeySecretArn?: string;
  /** Glue database the transform registers tables in (the pipeline's catalog.database). */
  readonly glueDatabaseName: string;
  /** The Glue Spark job for large objects (the pipeline's [glue].job_name). @default 'sluice-transform-large' */
  readonly glueJobName?: string;
  /** G.1X workers per Glue job run. @default 2 */
  readonly glueWorkers?: number;
  /** Glue job runs at once. @default 4 */
  readonly glueMaxConcurrentRuns?: number;
  /** Email address subscribed to the alarm topic. */
  readonly alarmEmail?: string;
  /** @default 30 */
  readonly rawRetentionDays?: number;
  /** @default 30 */
  readonly quarantineRetentionDays?: number;
  /** @default 90 */
  readonly loadsRetentionDays?: number;
  /** @default logs.RetentionDays.ONE_MONTH */
  readonly logRetention?: logs.RetentionDays;
  /** @default 2048 */
  readonly transformMemorySize?: number;
  /** @default 512 */
  readonly loaderMemorySize?: number;
  /** Functions are named `<prefix>-transform`, `<prefix>-redshift-loader`, ... @default the stack name */
  readonly functionNamePrefix?: string;
  /** The workspace Cargo.toml the functions are built from. @default the repository's */
  readonly manifestPath?: string;
  /**
   * Change data capture from PostgreSQL (wal-decoder, the change stream, cdc-sink), as
   * template.yaml's EnableCdc. @default none
   */
  readonly cdc?: SluiceCdcProps;
  /**
   * Extraction from OLTP shards on a schedule (the pipeline's `[tables.source]` sections), as
   * template.yaml's EnableExtract. @default none
   */
  readonly extract?: SluiceExtractProps;
}

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');

export class Sluice extends Construct {
  public readonly lakeBucket: s3.IBucket;
  public readonly transformFunction: lambda.Function;
  public readonly redshiftLoaderFunction: lambda.Function;
  public readonly transformDlq: sqs.Queue;
  public readonly manifestQueue: sqs.Queue;
  public readonly manifestDlq: sqs.Queue;
  public readonly glueJob: glue.CfnJob;
  public readonly alarmTopic: sns.Topic;
  /** The role COPY assumes: the one given, or the one created. */
  public readonly copyRoleArn: string;
  /** The CDC path, when `cdc` is set. */
  public readonly cdc?: SluiceCdcResources;
  /** The extract function, when `extract` is set. */
  public readonly extract?: SluiceExtractResources;

  constructor(scope: Construct, id: string, props: SluiceProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const { partition, region, account } = stack;
    const lake = props.lakeBucketName;
    const rs = props.redshift;
    if (!rs.workgroupArn === !rs.clusterIdentifier) {
      throw new Error('Sluice: set exactly one of redshift.workgroupArn and redshift.clusterIdentifier');
    }
    if (rs.clusterIdentifier && !rs.secretArn === !rs.dbUser) {
      throw new Error('Sluice: a cluster signs in with exactly one of redshift.secretArn or redshift.dbUser');
    }
    if (rs.workgroupArn && rs.dbUser) {
      throw new Error('Sluice: Serverless takes the user from IAM or redshift.secretArn; leave redshift.dbUser unset');
    }
    // A token cannot be checked or taken apart here (the ARN below strips `s3://` from the
    // text): the location must be known when the app is synthesized.
    if (Token.isUnresolved(props.pipelineLocation)) {
      throw new Error('Sluice: pipelineLocation must be a literal s3://BUCKET/KEY, not a token');
    }
    if (!/^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\/.+$/.test(props.pipelineLocation)) {
      throw new Error(`Sluice: pipelineLocation must be s3://BUCKET/KEY, not ${props.pipelineLocation}`);
    }
    const prefix = props.functionNamePrefix ?? stack.stackName;
    const manifestPath = props.manifestPath ?? path.join(REPO_ROOT, 'Cargo.toml');
    const logRetention = props.logRetention ?? logs.RetentionDays.ONE_MONTH;
    const glueJobName = props.glueJobName ?? 'sluice-transform-large';
    const database = rs.database ?? 'dev';

    const bucketArn = `arn:${partition}:s3:::${lake}`;
    const objects = (p: string) => `arn:${partition}:s3:::${lake}/${p}*`;
    const pipelineArn = `arn:${partition}:s3:::${props.pipelineLocation.replace(/^s3:\/\//, '')}`;
    const glueCatalog = [
      `arn:${partition}:glue:${region}:${account}:catalog`,
      `arn:${partition}:glue:${region}:${account}:database/${props.glueDatabaseName}`,
      `arn:${partition}:glue:${region}:${account}:table/${props.glueDatabaseName}/*`,
    ];
    const allow = (sid: string, actions: string[], resources: string[], conditions?: Record<string, unknown>) =>
      new iam.PolicyStatement({ sid, actions, resources, conditions });
    const logsStatement = (fn: string) =>
      allow('Logs', ['logs:CreateLogStream', 'logs:PutLogEvents'], [
        `arn:${partition}:logs:${region}:${account}:log-group:/aws/lambda/${fn}:*`,
      ]);
    const catalogActions = ['glue:GetTable', 'glue:CreateTable', 'glue:UpdateTable', 'glue:BatchCreatePartition', 'glue:CreateDatabase'];

    // ---- queues ---------------------------------------------------------------------------
    // Events that failed every retry (or were too old): replay as the README says.
    this.transformDlq = new sqs.Queue(this, 'TransformDLQ', {
      retentionPeriod: Duration.days(14),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    });
    this.manifestDlq = new sqs.Queue(this, 'ManifestDLQ', {
      retentionPeriod: Duration.days(14),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    });
    // Visibility: 6 x the loader's timeout (900 s) + the batching window (60 s), as Lambda
    // advises for SQS sources; 20 receives because a busy table returns its messages (see
    // template.yaml).
    this.manifestQueue = new sqs.Queue(this, 'ManifestQueue', {
      visibilityTimeout: Duration.seconds(5460),
      retentionPeriod: Duration.days(14),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      deadLetterQueue: { queue: this.manifestDlq, maxReceiveCount: 20 },
    });

    // ---- transform ------------------------------------------------------------------------
    const transformName = `${prefix}-transform`;
    const transformStatements = [
      logsStatement(transformName),
      allow('ReadPipeline', ['s3:GetObject'], [pipelineArn]),
      allow('ReadRaw', ['s3:GetObject'], [objects('raw/')]),
      allow('WriteOutputs', ['s3:PutObject', 's3:DeleteObject'], [objects('curated/'), objects('quarantine/')]),
      allow('Manifests', ['s3:GetObject', 's3:PutObject'], [objects('manifests/')]),
      allow('GlueRunClaims', ['s3:GetObject', 's3:PutObject', 's3:DeleteObject'], [objects('state/glue/')]),
      allow('AbortUploads', ['s3:AbortMultipartUpload'], [objects('curated/'), objects('quarantine/')]),
      allow('ListLake', ['s3:ListBucket'], [bucketArn]),
      allow('Catalog', catalogActions, glueCatalog),
      allow('LargeObjectsToGlue', ['glue:StartJobRun'], [`arn:${partition}:glue:${region}:${account}:job/${glueJobName}`]),
      // Lambda sends a failed asynchronous event here with the function's role.
      allow('FailureDestination', ['sqs:SendMessage'], [this.transformDlq.queueArn]),
    ];
    if (props.hashKeySecretArn) {
      transformStatements.push(allow('HashKey', ['secretsmanager:GetSecretValue'], [props.hashKeySecretArn]));
    }
    const transformRole = new iam.Role(this, 'TransformFunctionRole', {
      description: 'transform function (least privilege; README "IAM")',
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      inlinePolicies: { transform: new iam.PolicyDocument({ statements: transformStatements }) },
    });
    const env = {
      SLUICE_PIPELINE: props.pipelineLocation,
      // Pins the function to the lake bucket: events naming another bucket are refused.
      SLUICE_LAKE: `s3://${lake}`,
    };
    const transformLogs = new logs.LogGroup(this, 'TransformLogGroup', {
      logGroupName: `/aws/lambda/${transformName}`,
      retention: logRetention,
      // Deleted with the stack, as template.yaml's are: a kept group would make the next stack
      // of the same name fail on its existing name.
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.transformFunction = new RustFunction(this, 'TransformFunction', {
      functionName: transformName,
      description: 'raw/ objects -> partitioned Parquet in curated/, Glue partitions, a manifest',
      manifestPath,
      binaryName: 'transform',
      runtime: 'provided.al2023',
      architecture: lambda.Architecture.ARM_64,
      role: transformRole.withoutPolicyUpdates(),
      environment: env,
      timeout: Duration.seconds(900),
      memorySize: props.transformMemorySize ?? 2048,
      // The raw object and the Parquet files being written are spooled to /tmp.
      ephemeralStorageSize: Size.mebibytes(10240),
      loggingFormat: lambda.LoggingFormat.JSON,
      applicationLogLevelV2: lambda.ApplicationLogLevel.INFO,
      systemLogLevelV2: lambda.SystemLogLevel.WARN,
      retryAttempts: 2,
      maxEventAge: Duration.hours(6),
      onFailure: new destinations.SqsDestination(this.transformDlq),
    });
    this.transformFunction.node.addDependency(transformLogs);
    // The binary, for the parity check against template.yaml (test/parity.py).
    (this.transformFunction.node.defaultChild as lambda.CfnFunction).addMetadata('Sluice:Binary', 'transform');

    // ---- redshift-loader ------------------------------------------------------------------
    const loaderName = `${prefix}-redshift-loader`;
    const warehouseArn = rs.workgroupArn ?? `arn:${partition}:redshift:${region}:${account}:cluster:${rs.clusterIdentifier}`;
    const loaderStatements = [
      logsStatement(loaderName),
      allow('ReadPipeline', ['s3:GetObject'], [pipelineArn]),
      allow('ReadTransformOutputs', ['s3:GetObject'], [objects('manifests/'), objects('curated/')]),
      allow('WriteLoadOutputs', ['s3:PutObject'], [objects('loads/'), objects('quarantine/')]),
      allow('LoadState', ['s3:GetObject', 's3:PutObject', 's3:DeleteObject'], [objects('state/loads/')]),
      allow('ListLake', ['s3:ListBucket'], [bucketArn]),
      allow('ManifestQueue', ['sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:GetQueueAttributes'], [this.manifestQueue.queueArn]),
      allow('RunStatements', ['redshift-data:ExecuteStatement', 'redshift-data:BatchExecuteStatement'], [warehouseArn]),
      // Statement ids cannot be scoped by ARN: the condition limits these to the statements
      // this role submitted.
      allow('FollowOwnStatements', ['redshift-data:DescribeStatement', 'redshift-data:GetStatementResult'], ['*'], {
        StringEquals: { 'redshift-data:statement-owner-iam-userid': '${aws:userid}' },
      }),
    ];
    if (rs.secretArn) {
      loaderStatements.push(allow('RedshiftSecret', ['secretsmanager:GetSecretValue'], [rs.secretArn]));
    }
    if (rs.workgroupArn && !rs.secretArn) {
      loaderStatements.push(allow('WorkgroupCredentials', ['redshift-serverless:GetCredentials'], [rs.workgroupArn]));
    }
    if (rs.clusterIdentifier && rs.dbUser) {
      loaderStatements.push(allow('ClusterCredentials', ['redshift:GetClusterCredentials'], [
        `arn:${partition}:redshift:${region}:${account}:dbuser:${rs.clusterIdentifier}/${rs.dbUser}`,
        `arn:${partition}:redshift:${region}:${account}:dbname:${rs.clusterIdentifier}/${database}`,
      ]));
    }
    const loaderRole = new iam.Role(this, 'RedshiftLoaderFunctionRole', {
      description: 'redshift-loader function (least privilege; README "IAM")',
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      inlinePolicies: { 'redshift-loader': new iam.PolicyDocument({ statements: loaderStatements }) },
    });
    const loaderLogs = new logs.LogGroup(this, 'RedshiftLoaderLogGroup', {
      logGroupName: `/aws/lambda/${loaderName}`,
      retention: logRetention,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.redshiftLoaderFunction = new RustFunction(this, 'RedshiftLoaderFunction', {
      functionName: loaderName,
      description: 'manifests (SQS) -> COPY into a staging table and merge into Redshift, per table',
      manifestPath,
      binaryName: 'redshift-loader',
      runtime: 'provided.al2023',
      architecture: lambda.Architecture.ARM_64,
      role: loaderRole.withoutPolicyUpdates(),
      environment: env,
      timeout: Duration.seconds(900),
      memorySize: props.loaderMemorySize ?? 512,
      loggingFormat: lambda.LoggingFormat.JSON,
      applicationLogLevelV2: lambda.ApplicationLogLevel.INFO,
      systemLogLevelV2: lambda.SystemLogLevel.WARN,
    });
    this.redshiftLoaderFunction.node.addDependency(loaderLogs);
    (this.redshiftLoaderFunction.node.defaultChild as lambda.CfnFunction).addMetadata('Sluice:Binary', 'redshift-loader');
    // Manifests arriving within a minute load together (one merge per table); two loads at
    // once at most (2 is the smallest value SQS allows).
    this.redshiftLoaderFunction.addEventSource(new SqsEventSource(this.manifestQueue, {
      batchSize: 100,
      maxBatchingWindow: Duration.seconds(60),
      reportBatchItemFailures: true,
      maxConcurrency: 2,
    }));

    // ---- the lake bucket and its notifications --------------------------------------------
    if (props.existingLakeBucket) {
      this.lakeBucket = s3.Bucket.fromBucketName(this, 'LakeBucket', lake);
      this.lakeBucket.addEventNotification(s3.EventType.OBJECT_CREATED, new s3n.LambdaDestination(this.transformFunction), { prefix: 'raw/' });
      this.lakeBucket.addEventNotification(s3.EventType.OBJECT_CREATED, new s3n.SqsDestination(this.manifestQueue), { prefix: 'manifests/', suffix: '.json' });
      // CDK sets notifications on a bucket it does not own through its own handler function
      // (a stack-level singleton, outside this construct); its role is CDK's, not ours.
      for (const child of stack.node.children) {
        if (!child.node.id.startsWith('BucketNotificationsHandler')) continue;
        Validations.of(child).acknowledge({
          id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]',
          reason:
            "CDK's bucket-notifications handler for an existing bucket uses AWSLambdaBasicExecutionRole for its own logs; it runs only at deploy time",
        });
      }
    } else {
      this.lakeBucket = this.createLakeBucket(props);
    }

    // ---- Glue: database and the Spark job for large objects ------------------------------
    const glueDatabase = new glue.CfnDatabase(this, 'GlueDatabase', {
      catalogId: account,
      databaseInput: { name: props.glueDatabaseName, description: 'Sluice lake tables (curated/ Parquet), registered by the transform.' },
    });
    const glueDir = path.join(REPO_ROOT, 'infra', 'glue');
    const script = new s3assets.Asset(this, 'GlueScript', { path: path.join(glueDir, 'transform_job.py') });
    // A zip with sluice_rows.py at its root: Glue puts --extra-py-files zips on sys.path, so
    // `import sluice_rows` works whatever name the asset gets.
    const rows = new s3assets.Asset(this, 'GlueRows', { path: glueDir, exclude: ['*', '!sluice_rows.py'] });
    const glueStatements = [
      allow('Logs', ['logs:CreateLogGroup', 'logs:CreateLogStream', 'logs:PutLogEvents'], [
        `arn:${partition}:logs:${region}:${account}:log-group:/aws-glue/jobs/*`,
      ]),
      allow('ReadScriptsAndPipeline', ['s3:GetObject'], [
        script.bucket.arnForObjects(script.s3ObjectKey),
        rows.bucket.arnForObjects(rows.s3ObjectKey),
        pipelineArn,
      ]),
      allow('ReadRaw', ['s3:GetObject'], [objects('raw/')]),
      allow('WriteOutputs', ['s3:GetObject', 's3:PutObject', 's3:DeleteObject', 's3:AbortMultipartUpload'], [
        objects('curated/'), objects('quarantine/'), objects('manifests/'), objects('state/glue/'),
      ]),
      allow('ListLake', ['s3:ListBucket'], [bucketArn]),
      allow('Catalog', catalogActions, glueCatalog),
    ];
    if (props.hashKeySecretArn) {
      glueStatements.push(allow('HashKey', ['secretsmanager:GetSecretValue'], [props.hashKeySecretArn]));
    }
    const glueRole = new iam.Role(this, 'GlueTransformJobRole', {
      description: 'Glue transform job (scoped like the transform function; README "IAM")',
      assumedBy: new iam.ServicePrincipal('glue.amazonaws.com'),
      inlinePolicies: { 'glue-transform': new iam.PolicyDocument({ statements: glueStatements }) },
    });
    // template.yaml's logical id, for the parity check (test/parity.py).
    (glueRole.node.defaultChild as iam.CfnRole).addMetadata('Sluice:Role', 'GlueTransformJobRole');
    this.glueJob = new glue.CfnJob(this, 'GlueTransformJob', {
      name: glueJobName,
      description: 'Sluice transform for large raw objects (infra/glue/transform_job.py); started by the transform function',
      role: glueRole.roleArn,
      glueVersion: '5.0',
      command: { name: 'glueetl', pythonVersion: '3', scriptLocation: script.s3ObjectUrl },
      workerType: 'G.1X',
      numberOfWorkers: props.glueWorkers ?? 2,
      executionProperty: { maxConcurrentRuns: props.glueMaxConcurrentRuns ?? 4 },
      // Starts beyond MaxConcurrentRuns queue instead of failing (needs MaxRetries 0); a failed
      // run is announced and re-run by hand.
      jobRunQueuingEnabled: true,
      maxRetries: 0,
      timeout: 480,
      defaultArguments: {
        '--job-language': 'python',
        '--job-bookmark-option': 'job-bookmark-disable',
        '--extra-py-files': rows.s3ObjectUrl,
        '--additional-python-modules': 'xxhash==4.1.0',
        '--enable-continuous-cloudwatch-log': 'true',
      },
    });
    this.glueJob.addResourceDependency(glueDatabase);

    // ---- the COPY role --------------------------------------------------------------------
    if (rs.copyRoleArn) {
      this.copyRoleArn = rs.copyRoleArn;
    } else {
      const copyRole = new iam.Role(this, 'RedshiftCopyRole', {
        description: "Assumed by Redshift COPY to read the lake's curated/ files and loads/ COPY manifests",
        assumedBy: new iam.CompositePrincipal(
          new iam.ServicePrincipal('redshift.amazonaws.com'),
          new iam.ServicePrincipal('redshift-serverless.amazonaws.com'),
        ).withConditions({ StringEquals: { 'aws:SourceAccount': account } }),
        inlinePolicies: {
          'copy-from-lake': new iam.PolicyDocument({
            statements: [
              allow('ReadCopyInputs', ['s3:GetObject'], [objects('curated/'), objects('loads/')]),
              allow('LocateLake', ['s3:GetBucketLocation', 's3:ListBucket'], [bucketArn]),
            ],
          }),
        },
      });
      (copyRole.node.defaultChild as iam.CfnRole).addMetadata('Sluice:Role', 'RedshiftCopyRole');
      this.copyRoleArn = copyRole.roleArn;
    }

    // ---- alarms ---------------------------------------------------------------------------
    this.alarmTopic = new sns.Topic(this, 'AlarmTopic', { displayName: 'Sluice alarms', enforceSSL: true });
    this.alarmTopic.addToResourcePolicy(new iam.PolicyStatement({
      sid: 'AlarmsAndGlueEvents',
      principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com'), new iam.ServicePrincipal('events.amazonaws.com')],
      actions: ['sns:Publish'],
      resources: [this.alarmTopic.topicArn],
      conditions: { StringEquals: { 'aws:SourceAccount': account } },
    }));
    if (props.alarmEmail) {
      this.alarmTopic.addSubscription(new subs.EmailSubscription(props.alarmEmail));
    }
    const action = new cwActions.SnsAction(this.alarmTopic);
    const alarm = (id: string, description: string, metric: cloudwatch.IMetric) => {
      new cloudwatch.Alarm(this, id, {
        alarmDescription: description,
        metric,
        evaluationPeriods: 1,
        threshold: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }).addAlarmAction(action);
    };
    const period = Duration.minutes(5);
    alarm('TransformErrorsAlarm', 'transform invocations failed (each failed event is retried, then sent to TransformDLQ)',
      this.transformFunction.metricErrors({ period, statistic: 'Sum' }));
    alarm('TransformThrottlesAlarm', 'transform invocations throttled (account concurrency reached)',
      this.transformFunction.metricThrottles({ period, statistic: 'Sum' }));
    alarm('TransformDLQAlarm', 'raw objects whose transform failed every retry wait in TransformDLQ',
      this.transformDlq.metricApproximateNumberOfMessagesVisible({ period, statistic: 'Maximum' }));
    alarm('RedshiftLoaderErrorsAlarm', 'redshift-loader invocations failed',
      this.redshiftLoaderFunction.metricErrors({ period, statistic: 'Sum' }));
    alarm('RedshiftLoaderThrottlesAlarm', 'redshift-loader invocations throttled',
      this.redshiftLoaderFunction.metricThrottles({ period, statistic: 'Sum' }));
    alarm('ManifestDLQAlarm', 'manifests that failed 20 loads wait in ManifestDLQ (replay with `sluice load`)',
      this.manifestDlq.metricApproximateNumberOfMessagesVisible({ period, statistic: 'Maximum' }));
    // The loader's EMF metric (namespace Sluice, dimensions Function and Table): a Metrics
    // Insights query takes the maximum over every table, which no IMetric expresses.
    new cloudwatch.CfnAlarm(this, 'ReconciliationMismatchAlarm', {
      alarmDescription: "a load's row counts did not reconcile with its manifests (see the load record under loads/)",
      metrics: [{
        id: 'mismatch',
        expression: 'SELECT MAX(ReconciliationMismatch) FROM SCHEMA("Sluice", "Function", "Table") WHERE "Function" = \'redshift-loader\'',
        period: 300,
        returnData: true,
      }],
      evaluationPeriods: 1,
      threshold: 1,
      comparisonOperator: 'GreaterThanOrEqualToThreshold',
      treatMissingData: 'notBreaching',
      alarmActions: [this.alarmTopic.topicArn],
    });
    new events.Rule(this, 'GlueJobFailedRule', {
      description: 'A run of the Glue transform job failed, timed out or stopped in error',
      eventPattern: {
        source: ['aws.glue'],
        detailType: ['Glue Job State Change'],
        detail: { jobName: [glueJobName], state: ['FAILED', 'TIMEOUT', 'ERROR'] },
      },
      targets: [new targets.SnsTopic(this.alarmTopic)],
    });

    const shared = {
      prefix, manifestPath, logRetention, environment: env, pipelineArn, bucketArn, objects, logsStatement, alarmAction: action,
    };
    if (props.cdc) {
      this.cdc = addCdc(this, props.cdc, shared);
    }
    if (props.extract) {
      this.extract = addExtract(this, props.extract, { ...shared, alarmTopicArn: this.alarmTopic.topicArn });
    }

    acknowledgeNagFindings(this);
  }

  private createLakeBucket(props: SluiceProps): s3.Bucket {
    const days = (n: number | undefined, d: number) => Duration.days(n ?? d);
    const bucket = new s3.Bucket(this, 'LakeBucket', {
      bucketName: props.lakeBucketName,
      // The lake outlives the stack.
      removalPolicy: RemovalPolicy.RETAIN,
      encryption: s3.BucketEncryption.S3_MANAGED,
      bucketKeyEnabled: true,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      lifecycleRules: [
        { id: 'expire-raw', prefix: 'raw/', expiration: days(props.rawRetentionDays, 30) },
        { id: 'expire-quarantine', prefix: 'quarantine/', expiration: days(props.quarantineRetentionDays, 30) },
        { id: 'expire-loads', prefix: 'loads/', expiration: days(props.loadsRetentionDays, 90) },
        { id: 'expire-glue-scratch', prefix: 'state/glue/', expiration: Duration.days(7) },
        // Change events too large for a Kinesis record (row values): kept as long as raw/.
        { id: 'expire-spill', prefix: 'spill/', expiration: days(props.rawRetentionDays, 30) },
        { id: 'abort-incomplete-uploads', abortIncompleteMultipartUploadAfter: Duration.days(2) },
      ],
    });
    // The notifications go on the bucket resource itself, as in template.yaml, rather than
    // through CDK's notifications custom resource (one more function with s3:PutBucketNotification
    // on every bucket).
    const permission = new lambda.CfnPermission(this, 'TransformInvokePermission', {
      action: 'lambda:InvokeFunction',
      functionName: this.transformFunction.functionArn,
      principal: 's3.amazonaws.com',
      sourceAccount: Stack.of(this).account,
      sourceArn: `arn:${Stack.of(this).partition}:s3:::${props.lakeBucketName}`,
    });
    this.manifestQueue.addToResourcePolicy(new iam.PolicyStatement({
      sid: 'LakeNotifications',
      principals: [new iam.ServicePrincipal('s3.amazonaws.com')],
      actions: ['sqs:SendMessage'],
      resources: [this.manifestQueue.queueArn],
      conditions: {
        ArnEquals: { 'aws:SourceArn': `arn:${Stack.of(this).partition}:s3:::${props.lakeBucketName}` },
        StringEquals: { 'aws:SourceAccount': Stack.of(this).account },
      },
    }));
    const cfn = bucket.node.defaultChild as s3.CfnBucket;
    cfn.notificationConfiguration = {
      lambdaConfigurations: [{
        event: 's3:ObjectCreated:*',
        function: this.transformFunction.functionArn,
        filter: { s3Key: { rules: [{ name: 'prefix', value: 'raw/' }] } },
      }],
      queueConfigurations: [{
        event: 's3:ObjectCreated:*',
        queue: this.manifestQueue.queueArn,
        filter: { s3Key: { rules: [{ name: 'prefix', value: 'manifests/' }, { name: 'suffix', value: '.json' }] } },
      }],
    };
    // S3 checks the destinations when the configuration is set.
    cfn.addResourceDependency(permission);
    const queuePolicy = this.manifestQueue.node.tryFindChild('Policy');
    if (queuePolicy) bucket.node.addDependency(queuePolicy);
    return bucket;
  }
}
