//! Extract from MariaDB shards (the run's server; each shard a database of its own) into a
//! local lake: pages that split one instant, a late commit, a crash between the parts and the
//! watermark, a concurrent run, bad shards beside good ones, and many runs over three shards
//! where every row version lands in `raw/` exactly once.

mod extract_support;

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sqlx::mysql::MySqlConnectOptions;
use sqlx::Row;

use extract_support::*;
use sluice::extract::{ExtractError, Extractor, Limits, Mode, ShardOutcome, Shards};
use sluice_tests::{moto_sdk_config, moto_secret, mysql_url, unique_name};

const ITEMS: &str =
    "CREATE TABLE items (id BIGINT PRIMARY KEY, v INT NOT NULL, note VARCHAR(100) NULL, \
    updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), \
    deleted TINYINT(1) NOT NULL DEFAULT 0, KEY (updated_at, id))";

/// One shard with `items`, and its pipeline (`source` adds to `[tables.source]`).
async fn one_shard(source: &str) -> (MyShards, Arc<sluice::config::Pipeline>) {
    let shards = MyShards::create(1).await;
    shards.exec_all(ITEMS).await;
    let var = url_env(&shards.url(0));
    let p = items_pipeline("mysql", &shards_toml(&[("s0", &var)]), source);
    (shards, p)
}

#[tokio::test]
async fn fifty_rows_at_one_instant_survive_pages_of_seven() {
    let (shards, p) = one_shard("page_rows = 7\npart_rows = 10\nsafety_lag_secs = 0").await;
    let values: Vec<String> = (1..=50)
        .map(|i| format!("({i}, 1, '2020-01-01 00:00:00')"))
        .collect();
    shards
        .exec_all(&format!(
            "INSERT INTO items (id, v, updated_at) VALUES {}",
            values.join(", ")
        ))
        .await;
    let lake = lake();
    let ex = Extractor::new(p, lake.store.clone());
    let reports = ex
        .run_table("items", Shards::All, Mode::Incremental, limits())
        .await
        .expect("run");
    let s = extracted(&reports[0]);
    assert!(s.complete);
    assert_eq!(
        (s.rows, s.parts.len(), s.pages),
        (50, 5, 8),
        "50 rows: 8 pages of 7, 5 parts of 10"
    );
    let got = versions(lake.store.as_ref(), "raw/items/").await;
    let ids: BTreeSet<i64> = got.iter().map(|v| v.1).collect();
    assert_eq!((got.len(), ids.len()), (50, 50), "each of the 50 rows once");
    assert_eq!(ids, (1..=50).collect());
    let rows = raw_rows(lake.store.as_ref(), "raw/items/shard=s0/").await;
    let first = rows.values().next().expect("a part");
    assert_eq!(first[0]["updated_at"], "2020-01-01T00:00:00.000000Z");
    assert_eq!(first[0]["note"], serde_json::Value::Null, "explicit nulls");
    assert_eq!(first[0]["_shard"], "s0");
    // Nothing new: the next run reads nothing and writes nothing.
    let again = ex
        .run_table("items", Shards::All, Mode::Incremental, limits())
        .await
        .expect("rerun");
    assert_eq!(extracted(&again[0]).rows, 0);
    assert_eq!(versions(lake.store.as_ref(), "raw/items/").await.len(), 50);
    shards.drop_all().await;
}

/// The source's clock, as extract reads it.
async fn db_now(url: &str) -> String {
    let mut c = my_connect(url).await;
    sqlx::query_scalar("SELECT DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%d %H:%i:%s.%f')")
        .fetch_one(&mut c)
        .await
        .expect("clock")
}

#[tokio::test]
async fn a_late_commit_within_the_safety_lag_is_picked_up_next_run() {
    let shards = MyShards::create(1).await;
    shards.exec_all(ITEMS).await;
    let var = url_env(&shards.url(0));
    let (lagged_lake, eager_lake) = (lake(), lake());
    let lagged = Extractor::new(
        items_pipeline(
            "mysql",
            &shards_toml(&[("s0", &var)]),
            "safety_lag_secs = 2",
        ),
        lagged_lake.store.clone(),
    );
    // Without the lag, to show what the lag is for.
    let eager = Extractor::new(
        items_pipeline(
            "mysql",
            &shards_toml(&[("s0", &var)]),
            "safety_lag_secs = 0",
        ),
        eager_lake.store.clone(),
    );
    let mut late = my_connect(&shards.url(0)).await;
    my_exec(&mut late, "BEGIN").await;
    my_exec(
        &mut late,
        "INSERT INTO items (id, v, updated_at) VALUES (1, 1, UTC_TIMESTAMP(6))",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    my_exec(
        &mut my_connect(&shards.url(0)).await,
        "INSERT INTO items (id, v, updated_at) VALUES (2, 1, UTC_TIMESTAMP(6))",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Both runs start after row 1's updated_at, while it is uncommitted.
    let run = |ex: &Extractor| {
        let ex = ex.clone();
        async move {
            ex.run_table("items", Shards::All, Mode::Incremental, limits())
                .await
                .expect("run")
        }
    };
    assert_eq!(
        extracted(&run(&eager).await[0]).rows,
        1,
        "the eager run reads row 2"
    );
    assert_eq!(
        extracted(&run(&lagged).await[0]).rows,
        0,
        "the lagged run's bound is before both rows"
    );
    my_exec(&mut late, "COMMIT").await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        extracted(&run(&eager).await[0]).rows,
        0,
        "row 1 is behind the eager watermark: lost"
    );
    let s = extracted(&run(&lagged).await[0]).clone();
    assert_eq!(
        s.rows, 2,
        "the lagged run reads both, the late commit included"
    );
    let ids: Vec<i64> = versions(lagged_lake.store.as_ref(), "raw/items/")
        .await
        .iter()
        .map(|v| v.1)
        .collect();
    assert_eq!(ids, vec![1, 2]);
    let eager_ids: Vec<i64> = versions(eager_lake.store.as_ref(), "raw/items/")
        .await
        .iter()
        .map(|v| v.1)
        .collect();
    assert_eq!(eager_ids, vec![2]);
    assert!(
        s.lag_secs.is_some_and(|l| l >= 2.0),
        "lag behind the clock: {:?} (now {})",
        s.lag_secs,
        db_now(&shards.url(0)).await
    );
    shards.drop_all().await;
}

async fn insert_items(shards: &MyShards, ids: std::ops::RangeInclusive<i64>, ts: &str) {
    let values: Vec<String> = ids.map(|i| format!("({i}, 1, '{ts}')")).collect();
    shards
        .exec_all(&format!(
            "INSERT INTO items (id, v, updated_at) VALUES {}",
            values.join(", ")
        ))
        .await;
}

async fn part_keys(store: &dyn sluice::lake::ObjectStore) -> Vec<String> {
    store
        .list("raw/items/")
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect()
}

#[tokio::test]
async fn a_crash_before_the_watermark_reruns_to_the_same_part_keys() {
    let (shards, p) = one_shard("page_rows = 7\npart_rows = 10\nsafety_lag_secs = 0").await;
    insert_items(&shards, 1..=25, "2020-01-01 00:00:00").await;
    let base = lake();
    let wrapped = Arc::new(Wrapped::new(base.store.clone()));
    let ex = Extractor::new(p.clone(), wrapped.clone());
    let items = |ex: Extractor| async move {
        ex.run_table("items", Shards::All, Mode::Incremental, limits())
            .await
            .expect("run")
    };

    // Killed after every part, before the watermark.
    wrapped.fail_commit.store(true, Ordering::SeqCst);
    let crashed = items(ex.clone()).await;
    let ShardOutcome::Failed(e) = &crashed[0].outcome else {
        panic!("the commit must fail: {:?}", crashed[0].outcome)
    };
    assert!(
        e.to_string().contains("shard `s0`") && e.to_string().contains("state.json"),
        "{e}"
    );
    let written = part_keys(base.store.as_ref()).await;
    assert_eq!(written.len(), 3);
    shards
        .exec_all("UPDATE items SET v = 2, updated_at = UTC_TIMESTAMP(6) WHERE id = 5")
        .await;
    wrapped.fail_commit.store(false, Ordering::SeqCst);
    let rerun = items(ex.clone()).await;
    let s = extracted(&rerun[0]);
    assert!(s.resumed && s.complete && s.parts.is_empty(), "{s:?}");
    assert_eq!(
        part_keys(base.store.as_ref()).await,
        written,
        "the same part keys"
    );
    let once: Vec<(i64, i64)> = versions(base.store.as_ref(), "raw/items/")
        .await
        .iter()
        .map(|v| (v.1, v.2))
        .collect();
    assert_eq!(
        once,
        (1..=25).map(|i| (i, 1)).collect::<Vec<_>>(),
        "each row once, as read before the update"
    );
    // The updated row is in the next range.
    let next = items(ex.clone()).await;
    let s = extracted(&next[0]);
    assert_eq!((s.rows, s.parts.len()), (1, 1));
    assert!(!written.iter().any(|k| k == &s.parts[0]));
    let rows = raw_rows(base.store.as_ref(), &s.parts[0]).await;
    assert_eq!(
        (
            rows[&s.parts[0]][0]["id"].as_i64(),
            rows[&s.parts[0]][0]["v"].as_i64()
        ),
        (Some(5), Some(2))
    );

    // Killed in the middle: part 0 written, part 1's upload fails; a row of part 1 changes.
    let clean = lake();
    let ex = Extractor::new(p.clone(), clean.store.clone());
    items(ex).await;
    let clean_keys = part_keys(clean.store.as_ref()).await;
    shards.exec_all("DELETE FROM items").await;
    insert_items(&shards, 1..=25, "2020-01-01 00:00:00").await;
    let crash_lake = lake();
    let wrapped = Arc::new(Wrapped::new(crash_lake.store.clone()));
    *wrapped.fail_part.lock().expect("lock") = Some("part-00001.jsonl.gz".into());
    let ex = Extractor::new(p, wrapped.clone());
    assert!(matches!(
        items(ex.clone()).await[0].outcome,
        ShardOutcome::Failed(_)
    ));
    assert_eq!(part_keys(crash_lake.store.as_ref()).await.len(), 1);
    shards
        .exec_all("UPDATE items SET v = 2, updated_at = UTC_TIMESTAMP(6) WHERE id = 15")
        .await;
    *wrapped.fail_part.lock().expect("lock") = None;
    let s = extracted(&items(ex.clone()).await[0]).clone();
    assert!(s.resumed && s.complete);
    assert_eq!(s.rows, 14, "rows 11..25 but the updated 15");
    let crash_keys = part_keys(crash_lake.store.as_ref()).await;
    let folder = |k: &str| k.rsplit_once('/').map(|(_, f)| f.to_string());
    assert_eq!(
        crash_keys.iter().map(|k| folder(k)).collect::<Vec<_>>(),
        clean_keys.iter().map(|k| folder(k)).collect::<Vec<_>>(),
        "part-00000..00002, as a clean run names them"
    );
    items(ex).await;
    let mut got: Vec<(i64, i64)> = versions(crash_lake.store.as_ref(), "raw/items/")
        .await
        .iter()
        .map(|v| (v.1, v.2))
        .collect();
    got.sort();
    let want: Vec<(i64, i64)> = (1..=25).map(|i| (i, if i == 15 { 2 } else { 1 })).collect();
    assert_eq!(
        got, want,
        "every row once; the updated one in its new version"
    );
    shards.drop_all().await;
}

/// A run with too little time left reads nothing but records its range; the next run
/// continues that range (same run, same folder) and commits.
#[tokio::test]
async fn a_run_near_its_deadline_leaves_the_range_to_the_next() {
    let (shards, p) = one_shard("safety_lag_secs = 0").await;
    insert_items(&shards, 1..=3, "2020-01-01 00:00:00").await;
    let lake = lake();
    let ex = Extractor::new(p, lake.store.clone());
    let short = Limits::until(std::time::Instant::now() + Duration::from_secs(2));
    let r = ex
        .run_table("items", Shards::All, Mode::Incremental, short)
        .await
        .expect("run");
    let s = extracted(&r[0]).clone();
    assert_eq!((s.rows, s.pages, s.complete), (0, 0, false), "{s:?}");
    let r = ex
        .run_table("items", Shards::All, Mode::Incremental, limits())
        .await
        .expect("run");
    let next = extracted(&r[0]);
    assert!(next.resumed && next.complete, "{next:?}");
    assert_eq!(next.run, s.run, "the recorded range");
    assert_eq!(next.rows, 3);
    shards.drop_all().await;
}

#[tokio::test]
async fn a_second_run_backs_off_before_reading() {
    let (shards, p) = one_shard("safety_lag_secs = 0").await;
    insert_items(&shards, 1..=3, "2020-01-01 00:00:00").await;
    let base = lake();
    let wrapped = Arc::new(Wrapped::new(base.store.clone()));
    wrapped.hold.store(true, Ordering::SeqCst);
    let first = Extractor::new(p, wrapped.clone()).with_owner("run-one");
    let running = tokio::spawn(async move {
        first
            .run_table("items", Shards::All, Mode::Incremental, limits())
            .await
    });
    wrapped.reached.notified().await;
    // The same table and shard, but a URL nothing listens on: any query would fail.
    let var = url_env("mysql://root@127.0.0.1:1/nowhere");
    let second = Extractor::new(
        items_pipeline("mysql", &shards_toml(&[("s0", &var)]), ""),
        base.store.clone(),
    );
    let r = second
        .run_table("items", Shards::All, Mode::Incremental, limits())
        .await
        .expect("run");
    match &r[0].outcome {
        ShardOutcome::Busy { owner, until_ms } => {
            assert_eq!(owner, "run-one");
            assert!(*until_ms > 0);
        }
        other => panic!("the second run must back off before connecting: {other:?}"),
    }
    wrapped.go.notify_one();
    let done = running.await.expect("join").expect("run");
    assert_eq!(extracted(&done[0]).rows, 3);
    shards.drop_all().await;
}

#[tokio::test]
async fn a_bad_shard_is_named_and_the_others_run() {
    let shards = MyShards::create(2).await;
    shards.exec_all(ITEMS).await;
    insert_items(&shards, 1..=4, "2020-01-01 00:00:00").await;
    let sdk = moto_sdk_config().await;
    let o = MySqlConnectOptions::from_str(&mysql_url()).expect("url");
    let secret = |db: &str, engine: &str| {
        serde_json::json!({"host": o.get_host(), "port": o.get_port(), "username": o.get_username(), "password": "", "dbname": db, "engine": engine}).to_string()
    };
    let (good, wrong) = (unique_name("shard-good"), unique_name("shard-wrong"));
    moto_secret(&sdk, &good, secret(&shards.dbs[1], "mariadb").as_bytes()).await;
    moto_secret(&sdk, &wrong, secret(&shards.dbs[1], "postgres").as_bytes()).await;
    let ok = url_env(&shards.url(0));
    let down = url_env("mysql://root@127.0.0.1:1/nowhere");
    let list = format!(
        "shards = [{{ id = \"ok\", url_env = \"{ok}\" }}, {{ id = \"unset\", url_env = \"SLUICE_TEST_EXTRACT_NEVER_SET\" }}, \
         {{ id = \"down\", url_env = \"{down}\" }}, {{ id = \"by-secret\", secret = \"{good}\" }}, \
         {{ id = \"wrong-engine\", secret = \"{wrong}\" }}, {{ id = \"no-secret\", secret = \"{}\" }}]",
        unique_name("absent")
    );
    let lake = lake();
    let ex = Extractor::new(
        items_pipeline("mysql", &list, "safety_lag_secs = 0"),
        lake.store.clone(),
    )
    .with_secrets(aws_sdk_secretsmanager::Client::new(&sdk));
    let r = ex
        .run_table("items", Shards::All, Mode::Incremental, limits())
        .await
        .expect("run");
    let names: Vec<&str> = r.iter().map(|r| r.shard.as_str()).collect();
    assert_eq!(
        names,
        [
            "ok",
            "unset",
            "down",
            "by-secret",
            "wrong-engine",
            "no-secret"
        ]
    );
    assert_eq!(extracted(&r[0]).rows, 4);
    assert_eq!(extracted(&r[3]).rows, 4, "the shard behind a secret");
    for (i, says) in [
        (1, "$SLUICE_TEST_EXTRACT_NEVER_SET is not set"),
        (2, "cannot connect"),
        (4, "is for engine `postgres`"),
        (5, "secret"),
    ] {
        let ShardOutcome::Failed(e) = &r[i].outcome else {
            panic!("{}: {:?}", r[i].shard, r[i].outcome)
        };
        let text = e.to_string();
        assert!(
            text.contains(&format!("shard `{}`", r[i].shard)) && text.contains(says),
            "{text}"
        );
    }
    let got = versions(lake.store.as_ref(), "raw/items/").await;
    assert_eq!(got.iter().filter(|v| v.0 == "ok").count(), 4);
    assert_eq!(got.iter().filter(|v| v.0 == "by-secret").count(), 4);
    let only = ["nope".to_string()];
    match ex
        .run_table("items", Shards::Only(&only), Mode::Incremental, limits())
        .await
    {
        Err(e @ ExtractError::UnknownShard { .. }) => assert!(
            e.to_string().contains("no shard `nope` (it has: ok, unset"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        ex.run_table("nope", Shards::All, Mode::Incremental, limits())
            .await,
        Err(ExtractError::UnknownTable { .. })
    ));
    shards.drop_all().await;
}

/// The `(shard, id, v, deleted)` of every row of every shard now.
async fn current(shards: &MyShards) -> BTreeSet<(String, i64, i64, bool)> {
    let mut out = BTreeSet::new();
    for i in 0..shards.dbs.len() {
        let mut c = my_connect(&shards.url(i)).await;
        for row in sqlx::query("SELECT id, v, deleted FROM items")
            .fetch_all(&mut c)
            .await
            .expect("select")
        {
            out.insert((
                format!("s{i}"),
                row.get::<i64, _>(0),
                i64::from(row.get::<i32, _>(1)),
                row.get::<i8, _>(2) != 0,
            ));
        }
    }
    out
}

/// Rounds of inserts, updates and soft deletes on three shards, each round extracted by runs
/// of one page at most until its ranges are done (the first round as a dump): every version
/// present at a round's runs is in `raw/` once, and no other.
#[tokio::test]
async fn every_version_at_a_runs_bound_lands_once_across_three_shards() {
    let shards = MyShards::create(3).await;
    shards.exec_all(ITEMS).await;
    let vars: Vec<String> = (0..3).map(|i| url_env(&shards.url(i))).collect();
    let list: Vec<(String, &str)> = vars
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("s{i}"), v.as_str()))
        .collect();
    let list: Vec<(&str, &str)> = list.iter().map(|(a, b)| (a.as_str(), *b)).collect();
    let p = items_pipeline(
        "mysql",
        &shards_toml(&list),
        "page_rows = 7\npart_rows = 5\nsafety_lag_secs = 0\nsoft_delete_column = \"deleted\"",
    );
    let lake = lake();
    let ex = Extractor::new(p, lake.store.clone());
    let mut expected = BTreeSet::new();
    let mut next_id = 1;
    for round in 0..6 {
        for i in 0..3 {
            let mut c = my_connect(&shards.url(i)).await;
            let fresh: Vec<String> = (next_id..next_id + 9 + i as i64)
                .map(|id| format!("({id}, 1, UTC_TIMESTAMP(6))"))
                .collect();
            my_exec(
                &mut c,
                &format!(
                    "INSERT INTO items (id, v, updated_at) VALUES {}",
                    fresh.join(", ")
                ),
            )
            .await;
            my_exec(
                &mut c,
                &format!(
                    "UPDATE items SET v = v + 1, updated_at = UTC_TIMESTAMP(6) WHERE id % {} = {}",
                    3 + round,
                    i
                ),
            )
            .await;
            my_exec(&mut c, &format!("UPDATE items SET v = v + 1, deleted = 1, updated_at = UTC_TIMESTAMP(6) WHERE id = {}", next_id + 2)).await;
        }
        next_id += 20;
        expected.extend(current(&shards).await);
        let mode = if round == 0 {
            Mode::Historical
        } else {
            Mode::Incremental
        };
        let mut steps = 0;
        loop {
            let limits = Limits {
                max_pages: Some(1),
                ..limits()
            };
            let r = ex
                .run_table(
                    "items",
                    Shards::All,
                    if steps == 0 { mode } else { Mode::Incremental },
                    limits,
                )
                .await
                .expect("run");
            steps += 1;
            if r.iter().all(|r| extracted(r).complete) {
                break;
            }
            assert!(steps < 50, "round {round} never completes");
        }
        assert!(
            steps > 1,
            "round {round}: one page per run cannot finish at once"
        );
    }
    let rows = raw_rows(lake.store.as_ref(), "raw/items/").await;
    let mut got: Vec<(String, i64, i64, bool)> = rows
        .values()
        .flatten()
        .map(|r| {
            (
                r["_shard"].as_str().unwrap_or("").to_string(),
                r["id"].as_i64().unwrap_or(0),
                r["v"].as_i64().unwrap_or(0),
                r["_op"] == "d",
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        expected.iter().cloned().collect::<Vec<_>>(),
        "every version at a run's bound, once, deletes marked"
    );
    assert!(
        got.iter().filter(|v| v.3).count() >= 18,
        "soft deletes among them"
    );
    assert!(
        rows.keys().any(|k| k.contains("/historical/")),
        "round 0 was a dump"
    );
    shards.drop_all().await;
}
