//! The store test suite. Every test runs twice: on SQLite and on PostgreSQL.

mod common;

use common::{add_host, tenant};
use gpucloud_core::error::CloudError;
use gpucloud_core::lifecycle::{DesiredPower, InstanceState, Observed, Operation};
use gpucloud_store::instances::{
    CreateBatch, Created, InstanceQuery, NewInstance, NewShape, ObservedInstance, ResizePlan, Seen,
    TransitionOpts, TxError,
};
use gpucloud_store::keypairs::NewKeyPair;
use gpucloud_store::{Store, TenantScope};
use std::collections::HashSet;

fn inst(id: &str, host: &str, gpus: &[i64]) -> NewInstance {
    NewInstance {
        instance_id: id.into(),
        uuid: uuid::Uuid::new_v4().to_string(),
        name: id.into(),
        host_name: id.into(),
        zone: "ap-guangzhou-3".into(),
        instance_type: "GT5.6XLARGE240".into(),
        cpu: 24 * gpus.len().max(1) as i64,
        memory_gib: 240 * gpus.len().max(1) as i64,
        gpu_count: gpus.len() as i64,
        image_id: "img-gc0ubt22".into(),
        runtime: "sim".into(),
        charge_type: "POSTPAID_BY_HOUR".into(),
        system_disk: serde_json::json!({"DiskType": "CLOUD_PREMIUM", "DiskSize": 50}),
        data_disks: serde_json::json!([]),
        internet: serde_json::json!({}),
        tags: serde_json::json!([]),
        host_id: host.into(),
        gpu_indexes: gpus.to_vec(),
        ..Default::default()
    }
}

fn batch(insts: Vec<NewInstance>, token: Option<&str>) -> CreateBatch {
    CreateBatch {
        request_id: uuid::Uuid::new_v4().to_string(),
        client_token: token.map(String::from),
        instances: insts,
        group: None,
    }
}

async fn create(store: &Store, scope: &TenantScope, i: NewInstance) -> Result<Created, TxError> {
    store.instances_create(scope, &batch(vec![i], None)).await
}

fn obs(id: &str, generation: i64, observed: Observed) -> ObservedInstance {
    ObservedInstance {
        instance_id: id.into(),
        spec_generation: generation,
        observed,
        reboot_seq: 0,
        error: None,
    }
}

/// What a resize plan is made from: the instance as it is now.
async fn seen(store: &Store, scope: &TenantScope, id: &str) -> Seen {
    Seen::of(&store.instance_get(scope, id).await.unwrap().unwrap())
}

async fn state_of(store: &Store, scope: &TenantScope, id: &str) -> Option<InstanceState> {
    store
        .instance_get(scope, id)
        .await
        .unwrap()
        .map(|i| i.state)
}

both!(migrations_are_idempotent, |db| {
    let latest = gpucloud_store::db::MIGRATIONS.last().unwrap().0;
    assert_eq!(db.store.schema_version().await.unwrap(), latest);
    db.store
        .set_setting("region", "ap-guangzhou")
        .await
        .unwrap();
    db.store.set_setting("region", "ap-shanghai").await.unwrap();
    assert_eq!(
        db.store.setting("region").await.unwrap().as_deref(),
        Some("ap-shanghai")
    );
    assert_eq!(db.store.setting("missing").await.unwrap(), None);
});

both!(tenants_and_sealed_keys, |db| {
    let c = db.store.tenant_create("acme", 10).await.unwrap();
    assert!(c.secret_id.starts_with("AKID") && c.secret_id.len() == 36);
    assert_eq!(c.secret_key.len(), 32);
    let rec = db
        .store
        .api_key_lookup(&c.secret_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.secret_key, c.secret_key);
    assert_eq!(rec.scope.app_id(), c.app_id);
    assert!(rec.active);
    assert!(db.store.api_key_lookup("AKIDnope").await.unwrap().is_none());
    assert!(
        db.store.tenant_create("acme", 10).await.is_err(),
        "duplicate name"
    );
    let (sid2, _) = db.store.api_key_create(c.app_id).await.unwrap();
    assert_ne!(sid2, c.secret_id);
    // Keys are listed without their secrets, and can be turned off and on.
    let keys = db.store.api_keys_of(c.app_id).await.unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|(_, status, _)| status == "Active"));
    assert_eq!(
        db.store.api_key_set_active(&sid2, false).await.unwrap(),
        c.app_id
    );
    assert!(
        !db.store
            .api_key_lookup(&sid2)
            .await
            .unwrap()
            .unwrap()
            .active
    );
    assert!(
        db.store
            .api_key_lookup(&c.secret_id)
            .await
            .unwrap()
            .unwrap()
            .active
    );
    db.store.api_key_set_active(&sid2, true).await.unwrap();
    assert!(
        db.store
            .api_key_lookup(&sid2)
            .await
            .unwrap()
            .unwrap()
            .active
    );
    assert!(matches!(
        db.store.api_key_set_active("AKIDnope", false).await,
        Err(gpucloud_store::StoreError::NotFound(_))
    ));
    assert_eq!(db.store.tenant_list().await.unwrap().len(), 1);
    assert_eq!(
        db.store
            .tenant_by_name("acme")
            .await
            .unwrap()
            .unwrap()
            .app_id,
        c.app_id
    );
});

both!(hosts_register_and_refresh, |db| {
    add_host(&db.store, "host-a", 8).await;
    add_host(&db.store, "host-a", 8).await;
    let hosts = db.store.host_list().await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].state, "READY");
    assert_eq!(db.store.gpu_list(Some("host-a")).await.unwrap().len(), 8);
    // A GPU disappears from the inventory: it is fenced, not forgotten.
    let (h, mut g) = common::host("host-a", "ap-guangzhou-3", 8);
    g.pop();
    db.store.host_register(&h, &g).await.unwrap();
    let gpus = db.store.gpu_list(Some("host-a")).await.unwrap();
    assert_eq!(gpus.iter().filter(|g| g.health == "UNHEALTHY").count(), 1);
    db.store
        .host_set_admin("host-a", gpucloud_store::hosts::AdminState::Cordoned)
        .await
        .unwrap();
    db.store
        .host_set_state("host-a", "UNREACHABLE", "silent")
        .await
        .unwrap();
    // The agent comes back: reachable again, still cordoned.
    db.store.host_register(&h, &g).await.unwrap();
    let host = db.store.host_get("host-a").await.unwrap().unwrap();
    assert_eq!(
        (host.state.as_str(), host.admin_state.as_str()),
        ("READY", "CORDONED")
    );
    assert!(db
        .store
        .host_set_admin("host-zz", gpucloud_store::hosts::AdminState::Active)
        .await
        .is_err());
});

both!(claims_never_double_book, |db| {
    let s = tenant(&db.store, "t1").await;
    add_host(&db.store, "host-a", 8).await;
    assert!(matches!(
        create(&db.store, &s, inst("ins-aaaaaaa1", "host-a", &[0, 1])).await,
        Ok(Created::New(_))
    ));
    // GPU 1 is taken: the whole second create rolls back.
    let r = create(&db.store, &s, inst("ins-aaaaaaa2", "host-a", &[1, 2])).await;
    assert!(
        matches!(r, Err(TxError::HostConflict(ref h)) if h == "host-a"),
        "{r:?}"
    );
    assert_eq!(state_of(&db.store, &s, "ins-aaaaaaa2").await, None);
    let claims = db.store.gpu_claims().await.unwrap();
    assert_eq!(claims.len(), 2);
    let host = db.store.host_get("host-a").await.unwrap().unwrap();
    assert_eq!(host.cpu_used, 48, "the failed create left no CPU claimed");
    // CPU exhaustion is a conflict too.
    let mut big = inst("ins-aaaaaaa3", "host-a", &[4]);
    big.cpu = 1000;
    assert!(matches!(
        create(&db.store, &s, big).await,
        Err(TxError::HostConflict(_))
    ));
    // An unhealthy GPU cannot be claimed.
    db.store
        .gpu_set_health("GPU-host-a-5", false, "XID 79")
        .await
        .unwrap();
    assert!(matches!(
        create(&db.store, &s, inst("ins-aaaaaaa4", "host-a", &[5])).await,
        Err(TxError::HostConflict(_))
    ));
});

both!(racing_claims_for_the_last_gpu, |db| {
    let s = tenant(&db.store, "t1").await;
    add_host(&db.store, "host-a", 1).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = db.store.clone();
        tasks.push(tokio::spawn(async move {
            create(&store, &s, inst(&format!("ins-race{i:04}"), "host-a", &[0])).await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Created::New(_)) => won += 1,
            Err(TxError::HostConflict(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(db.store.gpu_claims().await.unwrap().len(), 1);
    let (total, _) = db
        .store
        .instance_list(
            &s,
            &InstanceQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(total, 1);
});

both!(client_token_makes_create_idempotent, |db| {
    let s = tenant(&db.store, "t1").await;
    add_host(&db.store, "host-a", 8).await;
    let a = db
        .store
        .instances_create(
            &s,
            &batch(vec![inst("ins-tok00001", "host-a", &[0])], Some("tok-1")),
        )
        .await
        .unwrap();
    assert_eq!(a, Created::New(vec!["ins-tok00001".into()]));
    let b = db
        .store
        .instances_create(
            &s,
            &batch(vec![inst("ins-tok00002", "host-a", &[1])], Some("tok-1")),
        )
        .await
        .unwrap();
    assert_eq!(b, Created::Existing(vec!["ins-tok00001".into()]));
    assert_eq!(db.store.gpu_claims().await.unwrap().len(), 1);
    // Tokens are per tenant.
    let s2 = tenant(&db.store, "t2").await;
    let c = db
        .store
        .instances_create(
            &s2,
            &batch(vec![inst("ins-tok00003", "host-a", &[2])], Some("tok-1")),
        )
        .await
        .unwrap();
    assert_eq!(c, Created::New(vec!["ins-tok00003".into()]));
});

both!(lifecycle_settles_from_reports, |db| {
    let s = tenant(&db.store, "t1").await;
    add_host(&db.store, "host-a", 8).await;
    create(&db.store, &s, inst("ins-life0001", "host-a", &[0, 1]))
        .await
        .unwrap();
    let (gen1, desired) = db.store.host_desired("host-a").await.unwrap();
    assert_eq!(desired.len(), 1);
    assert_eq!(desired[0].power, DesiredPower::Running);
    assert_eq!(
        desired[0].gpus.iter().map(|g| g.0).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert!(desired[0]
        .private_ip
        .as_deref()
        .unwrap()
        .starts_with("172.16.32."));
    // A stale report changes nothing.
    db.store
        .host_report(
            "host-a",
            gen1,
            &[obs("ins-life0001", 0, Observed::Running)],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        state_of(&db.store, &s, "ins-life0001").await,
        Some(InstanceState::Pending)
    );
    let out = db
        .store
        .host_report(
            "host-a",
            gen1,
            &[obs("ins-life0001", 1, Observed::Running)],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        out.transitions,
        vec![(
            "ins-life0001".into(),
            InstanceState::Pending,
            InstanceState::Running
        )]
    );
    let i = db
        .store
        .instance_get(&s, "ins-life0001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(i.latest_operation_state.as_deref(), Some("SUCCESS"));
    assert_eq!(
        i.gpu_ids,
        vec!["GPU-host-a-0".to_string(), "GPU-host-a-1".to_string()]
    );

    // Stop.
    let rid = "req-stop";
    let rows = db
        .store
        .instances_transition(
            &s,
            &["ins-life0001".into()],
            Operation::Stop,
            rid,
            &TransitionOpts::default(),
        )
        .await
        .unwrap();
    assert_eq!(rows[0].state, InstanceState::Stopping);
    // Starting a stopping instance is refused with the state's code.
    let e = db
        .store
        .instances_transition(
            &s,
            &["ins-life0001".into()],
            Operation::Stop,
            "r",
            &TransitionOpts::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, TxError::Cloud(CloudError::OperationInProgress { .. })),
        "{e:?}"
    );
    db.store
        .host_report(
            "host-a",
            0,
            &[obs("ins-life0001", 2, Observed::Stopped)],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        state_of(&db.store, &s, "ins-life0001").await,
        Some(InstanceState::Stopped)
    );
    let e = db
        .store
        .instances_transition(
            &s,
            &["ins-life0001".into()],
            Operation::Stop,
            "r",
            &TransitionOpts::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, TxError::Cloud(c) if c.code() == "UnsupportedOperation.InstanceStateStopped"),
        "{e:?}"
    );

    // Terminate: claims and IP go only when the host confirms.
    db.store
        .instances_transition(
            &s,
            &["ins-life0001".into()],
            Operation::Terminate,
            "r",
            &TransitionOpts::default(),
        )
        .await
        .unwrap();
    let (_, desired) = db.store.host_desired("host-a").await.unwrap();
    assert_eq!(desired[0].power, DesiredPower::Absent);
    assert_eq!(
        db.store.gpu_claims().await.unwrap().len(),
        2,
        "held until the host confirms"
    );
    let out = db
        .store
        .host_report(
            "host-a",
            0,
            &[obs("ins-life0001", 3, Observed::Absent)],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(out.released.len(), 1);
    assert_eq!(out.released[0].gpu_indexes, vec![0, 1]);
    assert!(db.store.gpu_claims().await.unwrap().is_empty());
    assert_eq!(
        state_of(&db.store, &s, "ins-life0001").await,
        None,
        "terminated instances are not listed"
    );
    let h = db.store.host_get("host-a").await.unwrap().unwrap();
    assert_eq!((h.cpu_used, h.mem_used_mib), (0, 0));
    assert!(db.store.host_desired("host-a").await.unwrap().1.is_empty());
});

both!(launch_failure_releases_after_cleanup, |db| {
    let s = tenant(&db.store, "t1").await;
    add_host(&db.store, "host-a", 8).await;
    create(&db.store, &s, inst("ins-fail0001", "host-a", &[0]))
        .await
        .unwrap();
    let mut o = obs("ins-fail0001", 1, Observed::Failed);
    o.error = Some("image not found on host".into());
    db.store.host_report("host-a", 0, &[o], &[]).await.unwrap();
    let i = db
        .store
        .instance_get(&s, "ins-fail0001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(i.state, InstanceState::LaunchFailed);
    assert_eq!(
        i.latest_operation_error.as_deref(),
        Some("image not found on host")
    );
    assert_eq!(db.store.gpu_claims().await.unwrap().len(), 1);
    db.store
        .host_report(
            "host-a",
            0,
            &[obs("ins-fail0001", 1, Observed::Absent)],
            &[],
        )
        .await
        .unwrap();
    assert!(db.store.gpu_claims().await.unwrap().is_empty());
});

both!(
    a_running_instance_the_host_cannot_keep_running_says_why,
    |db| {
        let s = tenant(&db.store, "t1").await;
        add_host(&db.store, "host-a", 8).await;
        create(&db.store, &s, inst("ins-keep0001", "host-a", &[0]))
            .await
            .unwrap();
        let report = |o: ObservedInstance| {
            let store = db.store.clone();
            async move { store.host_report("host-a", 0, &[o], &[]).await.unwrap() }
        };
        report(obs("ins-keep0001", 1, Observed::Running)).await;
        let get = || async {
            db.store
                .instance_get(&s, "ins-keep0001")
                .await
                .unwrap()
                .unwrap()
        };
        let i = get().await;
        assert_eq!(
            (i.state, i.host_error.as_deref()),
            (InstanceState::Running, None)
        );
        // The VM died and will not start again: still RUNNING (what the tenant
        // asked for, and the host keeps trying), but the reason is kept…
        let mut o = obs("ins-keep0001", 1, Observed::Failed);
        o.error = Some("QEMU exited right after starting".into());
        report(o).await;
        let i = get().await;
        assert_eq!(i.state, InstanceState::Running);
        assert_eq!(
            i.host_error.as_deref(),
            Some("QEMU exited right after starting")
        );
        assert_eq!(
            i.latest_operation_state.as_deref(),
            Some("SUCCESS"),
            "no operation failed"
        );
        // … until the host reports it running again.
        report(obs("ins-keep0001", 1, Observed::Running)).await;
        assert_eq!(get().await.host_error, None);
        assert_eq!(
            db.store.gpu_claims().await.unwrap().len(),
            1,
            "nothing released"
        );
    }
);

both!(resize_on_host_and_by_moving, |db| {
    let s = tenant(&db.store, "t1").await;
    add_host(&db.store, "host-a", 8).await;
    add_host(&db.store, "host-b", 8).await;
    create(&db.store, &s, inst("ins-size0001", "host-a", &[0]))
        .await
        .unwrap();
    db.store
        .host_report(
            "host-a",
            0,
            &[obs("ins-size0001", 1, Observed::Running)],
            &[],
        )
        .await
        .unwrap();
    let opts = TransitionOpts::default();
    db.store
        .instances_transition(&s, &["ins-size0001".into()], Operation::Stop, "r", &opts)
        .await
        .unwrap();
    db.store
        .host_report(
            "host-a",
            0,
            &[obs("ins-size0001", 2, Observed::Stopped)],
            &[],
        )
        .await
        .unwrap();
    // 1 -> 4 GPUs on the same host.
    let four = NewShape {
        instance_type: "GT5.24XLARGE960".into(),
        cpu: 96,
        memory_gib: 960,
        gpu_count: 4,
    };
    let r = db
        .store
        .instance_resize(
            &s,
            "ins-size0001",
            "r",
            &four,
            &ResizePlan::SameHost {
                add: vec![1, 2, 3],
                drop: vec![],
            },
            seen(&db.store, &s, "ins-size0001").await,
        )
        .await
        .unwrap();
    assert_eq!(r.state, InstanceState::Starting);
    assert_eq!(r.gpu_ids.len(), 4);
    db.store
        .host_report(
            "host-a",
            0,
            &[obs("ins-size0001", 3, Observed::Running)],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        state_of(&db.store, &s, "ins-size0001").await,
        Some(InstanceState::Running)
    );
    // 4 -> 8 GPUs on another host: host-a holds its 4 GPUs until it lets go.
    let mut filler = inst("ins-fill0001", "host-a", &[4]);
    filler.cpu = 1;
    filler.memory_gib = 1;
    create(&db.store, &s, filler).await.unwrap();
    db.store
        .instances_transition(&s, &["ins-size0001".into()], Operation::Stop, "r", &opts)
        .await
        .unwrap();
    db.store
        .host_report(
            "host-a",
            0,
            &[obs("ins-size0001", 4, Observed::Stopped)],
            &[],
        )
        .await
        .unwrap();
    let eight = NewShape {
        instance_type: "GT5.48XLARGE1920".into(),
        cpu: 192,
        memory_gib: 1920,
        gpu_count: 8,
    };
    let r = db
        .store
        .instance_resize(
            &s,
            "ins-size0001",
            "r",
            &eight,
            &ResizePlan::Move {
                host_id: "host-b".into(),
                gpus: (0..8).collect(),
            },
            seen(&db.store, &s, "ins-size0001").await,
        )
        .await
        .unwrap();
    assert_eq!(r.host_id.as_deref(), Some("host-b"));
    assert_eq!(r.gpu_ids.len(), 8);
    let held_on_a: Vec<_> = db
        .store
        .gpu_claims()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.2 == "host-a" && c.1 == "ins-size0001")
        .collect();
    assert_eq!(held_on_a.len(), 4);
    assert!(held_on_a.iter().all(|c| c.3), "marked released, still held");
    let (_, desired_a) = db.store.host_desired("host-a").await.unwrap();
    assert_eq!(
        desired_a
            .iter()
            .find(|d| d.instance_id == "ins-size0001")
            .unwrap()
            .power,
        DesiredPower::Absent
    );
    let out = db
        .store
        .host_report(
            "host-a",
            0,
            &[obs("ins-size0001", 5, Observed::Absent)],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        out.released
            .iter()
            .map(|r| r.gpu_indexes.len())
            .sum::<usize>(),
        4
    );
    assert!(db
        .store
        .gpu_claims()
        .await
        .unwrap()
        .iter()
        .all(|c| !(c.2 == "host-a" && c.1 == "ins-size0001")));
    db.store
        .host_report(
            "host-b",
            0,
            &[obs("ins-size0001", 5, Observed::Running)],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        state_of(&db.store, &s, "ins-size0001").await,
        Some(InstanceState::Running)
    );
    let a = db.store.host_get("host-a").await.unwrap().unwrap();
    assert_eq!(a.cpu_used, 1, "only the filler remains on host-a");
    // 8 -> 2 on the same host: dropped GPUs stay held until the host runs the new spec.
    db.store
        .instances_transition(&s, &["ins-size0001".into()], Operation::Stop, "r", &opts)
        .await
        .unwrap();
    db.store
        .host_report(
            "host-b",
            0,
            &[obs("ins-size0001", 6, Observed::Stopped)],
            &[],
        )
        .await
        .unwrap();
    let two = NewShape {
        instance_type: "GT5.12XLARGE480".into(),
        cpu: 48,
        memory_gib: 480,
        gpu_count: 2,
    };
    db.store
        .instance_resize(
            &s,
            "ins-size0001",
            "r",
            &two,
            &ResizePlan::SameHost {
                add: vec![],
                drop: (2..8).collect(),
            },
            seen(&db.store, &s, "ins-size0001").await,
        )
        .await
        .unwrap();
    assert_eq!(
        db.store
            .gpu_claims()
            .await
            .unwrap()
            .iter()
            .filter(|c| c.2 == "host-b")
            .count(),
        8
    );
    db.store
        .host_report(
            "host-b",
            0,
            &[obs("ins-size0001", 7, Observed::Running)],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        db.store
            .gpu_claims()
            .await
            .unwrap()
            .iter()
            .filter(|c| c.2 == "host-b")
            .count(),
        2
    );
    let b = db.store.host_get("host-b").await.unwrap().unwrap();
    assert_eq!(b.cpu_used, 48);
});

both!(stop_charging_releases_and_start_reclaims, |db| {
    let s = tenant(&db.store, "t1").await;
    add_host(&db.store, "host-a", 2).await;
    create(&db.store, &s, inst("ins-stch0001", "host-a", &[0, 1]))
        .await
        .unwrap();
    db.store
        .host_report(
            "host-a",
            0,
            &[obs("ins-stch0001", 1, Observed::Running)],
            &[],
        )
        .await
        .unwrap();
    let opts = TransitionOpts {
        stopped_mode: Some("STOP_CHARGING".into()),
        ..Default::default()
    };
    db.store
        .instances_transition(&s, &["ins-stch0001".into()], Operation::Stop, "r", &opts)
        .await
        .unwrap();
    let out = db
        .store
        .host_report(
            "host-a",
            0,
            &[obs("ins-stch0001", 2, Observed::Stopped)],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(out.released.len(), 1);
    assert!(db.store.gpu_claims().await.unwrap().is_empty());
    // Someone else takes one GPU; the start cannot reclaim both.
    create(&db.store, &s, inst("ins-stch0002", "host-a", &[0]))
        .await
        .unwrap();
    let mut re = TransitionOpts::default();
    re.reclaims.insert("ins-stch0001".into(), vec![0, 1]);
    let e = db
        .store
        .instances_transition(&s, &["ins-stch0001".into()], Operation::Start, "r", &re)
        .await
        .unwrap_err();
    assert!(matches!(e, TxError::HostConflict(_)));
    assert_eq!(
        state_of(&db.store, &s, "ins-stch0001").await,
        Some(InstanceState::Stopped)
    );
    db.store
        .instances_transition(
            &s,
            &["ins-stch0002".into()],
            Operation::Terminate,
            "r",
            &TransitionOpts::default(),
        )
        .await
        .unwrap();
    db.store
        .host_report(
            "host-a",
            0,
            &[obs("ins-stch0002", 2, Observed::Absent)],
            &[],
        )
        .await
        .unwrap();
    db.store
        .instances_transition(&s, &["ins-stch0001".into()], Operation::Start, "r", &re)
        .await
        .unwrap();
    assert_eq!(db.store.gpu_claims().await.unwrap().len(), 2);
});

both!(tenant_walls, |db| {
    let a = tenant(&db.store, "alice").await;
    let b = tenant(&db.store, "bob").await;
    add_host(&db.store, "host-a", 8).await;
    create(&db.store, &a, inst("ins-wall0001", "host-a", &[0]))
        .await
        .unwrap();
    let key = NewKeyPair {
        key_id: "skey-wall0001".into(),
        name: "k".into(),
        project_id: 0,
        public_key: "ssh-ed25519 AAAA".into(),
        fingerprint: "fp".into(),
        tags: vec![],
    };
    db.store.key_pair_create(&a, &key).await.unwrap();
    let ids = vec!["ins-wall0001".to_string()];
    assert!(db
        .store
        .instance_get(&b, "ins-wall0001")
        .await
        .unwrap()
        .is_none());
    assert!(db.store.instances_get(&b, &ids).await.unwrap().is_empty());
    assert_eq!(
        db.store
            .instance_list(
                &b,
                &InstanceQuery {
                    limit: 100,
                    ..Default::default()
                }
            )
            .await
            .unwrap()
            .0,
        0
    );
    let e = db
        .store
        .instances_transition(&b, &ids, Operation::Stop, "r", &TransitionOpts::default())
        .await
        .unwrap_err();
    assert!(matches!(e, TxError::Cloud(CloudError::InstanceNotFound(_))));
    assert!(matches!(
        db.store
            .instances_modify(
                &b,
                &ids,
                &gpucloud_store::instances::InstanceChanges {
                    name: Some("x".into()),
                    ..Default::default()
                }
            )
            .await,
        Err(TxError::Cloud(CloudError::InstanceNotFound(_)))
    ));
    assert!(matches!(
        db.store
            .instances_set_keys(&b, &ids, &["skey-wall0001".into()], true, true, "req")
            .await,
        Err(TxError::Cloud(CloudError::InstanceNotFound(_)))
    ));
    let shape = NewShape {
        instance_type: "x".into(),
        cpu: 1,
        memory_gib: 1,
        gpu_count: 0,
    };
    assert!(matches!(
        db.store
            .instance_resize(
                &b,
                "ins-wall0001",
                "r",
                &shape,
                &ResizePlan::SameHost {
                    add: vec![],
                    drop: vec![]
                },
                // What the owner sees: another tenant is refused all the same.
                seen(&db.store, &a, "ins-wall0001").await,
            )
            .await,
        Err(TxError::Cloud(CloudError::InstanceNotFound(_)))
    ));
    assert!(db
        .store
        .key_pairs(&b, Some(&["skey-wall0001".to_string()]))
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        db.store
            .key_pairs_delete(&b, &["skey-wall0001".into()])
            .await,
        Err(TxError::Cloud(CloudError::KeyPairNotFound(_)))
    ));
    assert!(matches!(
        db.store
            .key_pair_modify(&b, "skey-wall0001", Some("n"), None)
            .await,
        Err(TxError::Cloud(CloudError::KeyPairNotFound(_)))
    ));
    // The same key name is fine in another tenant.
    db.store
        .key_pair_create(
            &b,
            &NewKeyPair {
                key_id: "skey-wall0002".into(),
                ..key.clone()
            },
        )
        .await
        .unwrap();
    // Alice still sees hers untouched.
    assert_eq!(
        db.store
            .instance_get(&a, "ins-wall0001")
            .await
            .unwrap()
            .unwrap()
            .name,
        "ins-wall0001"
    );
});

both!(key_pairs_rules, |db| {
    let s = tenant(&db.store, "t1").await;
    add_host(&db.store, "host-a", 8).await;
    let k = NewKeyPair {
        key_id: "skey-kkkkkk01".into(),
        name: "main".into(),
        project_id: 0,
        public_key: "ssh-ed25519 AAAA".into(),
        fingerprint: "fp1".into(),
        tags: vec![],
    };
    db.store.key_pair_create(&s, &k).await.unwrap();
    let dup_name = NewKeyPair {
        key_id: "skey-kkkkkk02".into(),
        fingerprint: "fp2".into(),
        ..k.clone()
    };
    assert!(matches!(
        db.store.key_pair_create(&s, &dup_name).await,
        Err(TxError::Cloud(CloudError::KeyPairNameDuplicate(_)))
    ));
    let dup_key = NewKeyPair {
        key_id: "skey-kkkkkk03".into(),
        name: "other".into(),
        ..k.clone()
    };
    assert!(matches!(
        db.store.key_pair_create(&s, &dup_key).await,
        Err(TxError::Cloud(CloudError::PublicKeyDuplicate(_)))
    ));
    let mut i = inst("ins-keys0001", "host-a", &[0]);
    i.key_ids = vec!["skey-kkkkkk01".into()];
    create(&db.store, &s, i).await.unwrap();
    let kp = db.store.key_pairs(&s, None).await.unwrap();
    assert_eq!(kp[0].instance_ids, vec!["ins-keys0001".to_string()]);
    assert!(matches!(
        db.store
            .key_pairs_delete(&s, &["skey-kkkkkk01".into()])
            .await,
        Err(TxError::Cloud(CloudError::KeyPairInUse { .. }))
    ));
    let (_, desired) = db.store.host_desired("host-a").await.unwrap();
    assert_eq!(desired[0].public_keys, vec!["ssh-ed25519 AAAA".to_string()]);
    let ids = ["ins-keys0001".to_string()];
    let key = ["skey-kkkkkk01".to_string()];
    // Still launching: refused, nothing changes.
    assert!(matches!(
        db.store
            .instances_set_keys(&s, &ids, &key, false, true, "req-1")
            .await,
        Err(TxError::Cloud(CloudError::OperationInProgress { .. }))
    ));
    let gen = db
        .store
        .instance_get(&s, "ins-keys0001")
        .await
        .unwrap()
        .unwrap()
        .spec_generation;
    db.store
        .host_report(
            "host-a",
            0,
            &[obs("ins-keys0001", gen, Observed::Running)],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        state_of(&db.store, &s, "ins-keys0001").await,
        Some(InstanceState::Running)
    );
    // Running without ForceStop: refused, nothing changes.
    assert!(matches!(
        db.store
            .instances_set_keys(&s, &ids, &key, false, false, "req-2")
            .await,
        Err(TxError::Cloud(CloudError::InstanceState {
            state: InstanceState::Running,
            ..
        }))
    ));
    // A key pair deleted after the API looked: refused inside the
    // transaction, and the instance is not restarted.
    assert!(matches!(
        db.store
            .instances_set_keys(&s, &ids, &["skey-gone0001".into()], true, true, "req-x")
            .await,
        Err(TxError::Cloud(CloudError::KeyPairNotFound(_)))
    ));
    assert_eq!(
        state_of(&db.store, &s, "ins-keys0001").await,
        Some(InstanceState::Running)
    );
    let (_, desired) = db.store.host_desired("host-a").await.unwrap();
    assert_eq!(desired[0].public_keys.len(), 1);
    // With ForceStop: the keys change and the restart begins, together.
    let rows = db
        .store
        .instances_set_keys(&s, &ids, &key, false, true, "req-3")
        .await
        .unwrap();
    assert_eq!(rows[0].state, InstanceState::Rebooting);
    assert_eq!(
        rows[0].latest_operation.as_deref(),
        Some("DisassociateInstancesKeyPairs")
    );
    assert!(rows[0].spec_generation > gen);
    let (_, desired) = db.store.host_desired("host-a").await.unwrap();
    assert!(desired[0].public_keys.is_empty());
    db.store
        .key_pairs_delete(&s, &["skey-kkkkkk01".into()])
        .await
        .unwrap();
    assert!(db.store.key_pairs(&s, None).await.unwrap().is_empty());
});

both!(placement_groups_enforce_spread_and_quota, |db| {
    let s = tenant(&db.store, "t1").await;
    add_host(&db.store, "host-a", 8).await;
    add_host(&db.store, "host-b", 8).await;
    let g = gpucloud_store::groups::GroupRow {
        group_id: "ps-grp00001".into(),
        name: "g".into(),
        group_type: "HOST".into(),
        quota: 2,
        affinity: 1,
        strategy: "SPREAD".into(),
        partition_count: 0,
        tags: vec![],
        created_at: 1,
        instance_ids: vec![],
    };
    db.store.group_create(&s, &g, Some("tok")).await.unwrap();
    let again = db
        .store
        .group_create(
            &s,
            &gpucloud_store::groups::GroupRow {
                group_id: "ps-grp00002".into(),
                ..g.clone()
            },
            Some("tok"),
        )
        .await
        .unwrap();
    assert_eq!(again.group_id, "ps-grp00001");
    let grp = Some(("ps-grp00001".to_string(), "HOST".to_string(), 2));
    let mut a = inst("ins-grp00001", "host-a", &[0]);
    a.placement_group_id = Some("ps-grp00001".into());
    db.store
        .instances_create(
            &s,
            &CreateBatch {
                group: grp.clone(),
                ..batch(vec![a], None)
            },
        )
        .await
        .unwrap();
    let mut b = inst("ins-grp00002", "host-a", &[1]);
    b.placement_group_id = Some("ps-grp00001".into());
    let e = db
        .store
        .instances_create(
            &s,
            &CreateBatch {
                group: grp.clone(),
                ..batch(vec![b.clone()], None)
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, TxError::HostConflict(_)),
        "same host refused: {e:?}"
    );
    b.host_id = "host-b".into();
    db.store
        .instances_create(
            &s,
            &CreateBatch {
                group: grp.clone(),
                ..batch(vec![b], None)
            },
        )
        .await
        .unwrap();
    let mut c = inst("ins-grp00003", "host-b", &[2]);
    c.placement_group_id = Some("ps-grp00001".into());
    let e = db
        .store
        .instances_create(
            &s,
            &CreateBatch {
                group: grp,
                ..batch(vec![c], None)
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, TxError::Cloud(CloudError::PlacementGroupQuota { .. })),
        "{e:?}"
    );
    let groups = db.store.groups(&s, None).await.unwrap();
    assert_eq!(groups[0].instance_ids.len(), 2);
    assert!(matches!(
        db.store.groups_delete(&s, &["ps-grp00001".into()]).await,
        Err(TxError::Cloud(CloudError::PlacementGroupNotEmpty(_)))
    ));
});

both!(private_ips_are_unique_and_reused, |db| {
    let s = tenant(&db.store, "t1").await;
    add_host(&db.store, "host-a", 0).await;
    let mut ips = HashSet::new();
    for i in 0..5 {
        let mut n = inst(&format!("ins-ipam{i:04}"), "host-a", &[]);
        n.cpu = 1;
        n.memory_gib = 1;
        create(&db.store, &s, n).await.unwrap();
        let got = db
            .store
            .instance_get(&s, &format!("ins-ipam{i:04}"))
            .await
            .unwrap()
            .unwrap();
        assert!(ips.insert(got.private_ip.clone().unwrap()));
        assert!(got.vpc_id.unwrap().starts_with("vpc-"));
    }
    assert!(ips.contains("172.16.32.2"));
    assert!(
        !ips.contains("172.16.32.1"),
        "the gateway is never handed out"
    );
});

both!(describe_filters_and_paging, |db| {
    let s = tenant(&db.store, "t1").await;
    add_host(&db.store, "host-a", 8).await;
    for i in 0..6 {
        let mut n = inst(&format!("ins-list{i:04}"), "host-a", &[i]);
        n.name = if i % 2 == 0 {
            format!("web-{i}")
        } else {
            format!("db_{i}")
        };
        create(&db.store, &s, n).await.unwrap();
    }
    let q = |f: fn(&mut InstanceQuery)| {
        let mut q = InstanceQuery {
            limit: 100,
            ..Default::default()
        };
        f(&mut q);
        q
    };
    assert_eq!(
        db.store
            .instance_list(&s, &q(|q| q.names = vec!["web".into()]))
            .await
            .unwrap()
            .0,
        3
    );
    // `_` in a name filter is literal, not a wildcard.
    assert_eq!(
        db.store
            .instance_list(&s, &q(|q| q.names = vec!["db_".into()]))
            .await
            .unwrap()
            .0,
        3
    );
    assert_eq!(
        db.store
            .instance_list(&s, &q(|q| q.states = vec!["PENDING".into()]))
            .await
            .unwrap()
            .0,
        6
    );
    assert_eq!(
        db.store
            .instance_list(&s, &q(|q| q.states = vec!["RUNNING".into()]))
            .await
            .unwrap()
            .0,
        0
    );
    assert_eq!(
        db.store
            .instance_list(
                &s,
                &q(|q| q.ids = vec!["ins-list0001".into(), "ins-list0002".into()])
            )
            .await
            .unwrap()
            .0,
        2
    );
    let (total, page) = db
        .store
        .instance_list(
            &s,
            &InstanceQuery {
                limit: 4,
                offset: 4,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((total, page.len()), (6, 2));
});

both!(join_tokens_and_agent_certificates, |db| {
    use gpucloud_store::agents::TokenRefusal;
    let t = db
        .store
        .join_token_create("rack 7", 60_000, 1)
        .await
        .unwrap();
    assert!(t.starts_with("gcj."));
    assert_eq!(db.store.join_token_use(&t).await.unwrap(), Ok(()));
    assert_eq!(
        db.store.join_token_use(&t).await.unwrap(),
        Err(TokenRefusal::UsedUp),
        "a one-use token works once"
    );
    // A wrong secret for a real ID, garbage and empty strings are all "invalid".
    let (id_part, _) = t.rsplit_once('.').unwrap();
    for bad in [
        format!("{id_part}.wrongsecret"),
        "gcj.nope.nope".into(),
        "".into(),
        "a.b.c.d".into(),
    ] {
        assert_eq!(
            db.store.join_token_use(&bad).await.unwrap(),
            Err(TokenRefusal::Invalid),
            "{bad}"
        );
    }
    let expired = db.store.join_token_create("old", -1, 5).await.unwrap();
    assert_eq!(
        db.store.join_token_use(&expired).await.unwrap(),
        Err(TokenRefusal::Expired)
    );
    // Joining records the certificate with the token's use, or neither.
    let j = db.store.join_token_create("join", 60_000, 1).await.unwrap();
    assert_eq!(
        db.store.join_host(&j, "sha256:jj", "host-j").await.unwrap(),
        Ok(())
    );
    assert_eq!(
        db.store
            .agent_cert_host("sha256:jj")
            .await
            .unwrap()
            .as_deref(),
        Some("host-j")
    );
    assert_eq!(
        db.store.join_host(&j, "sha256:kk", "host-k").await.unwrap(),
        Err(TokenRefusal::UsedUp)
    );
    assert_eq!(db.store.agent_cert_host("sha256:kk").await.unwrap(), None);
    // A token for new hosts cannot enrol a machine as a host that already
    // joined (a takeover): refused, and the token is not used up.
    let new_only = db.store.join_token_create("new", 60_000, 1).await.unwrap();
    assert_eq!(
        db.store
            .join_host(&new_only, "sha256:evil", "host-j")
            .await
            .unwrap(),
        Err(TokenRefusal::HostTaken)
    );
    assert_eq!(db.store.agent_cert_host("sha256:evil").await.unwrap(), None);
    // A registered host without a certificate yet counts as known too.
    add_host(&db.store, "host-r", 1).await;
    assert_eq!(
        db.store
            .join_host(&new_only, "sha256:evil", "host-r")
            .await
            .unwrap(),
        Err(TokenRefusal::HostTaken)
    );
    assert_eq!(
        db.store
            .join_host(&new_only, "sha256:n1", "host-n")
            .await
            .unwrap(),
        Ok(()),
        "the refusals left the token's use in place"
    );
    // Re-joining a known host takes a token issued for it; the join
    // replaces (revokes) its earlier certificate.
    let rejoin = db
        .store
        .join_token_for_host("reinstalled", 60_000, "host-j")
        .await
        .unwrap();
    assert_eq!(
        db.store
            .join_host(&rejoin, "sha256:x", "host-k")
            .await
            .unwrap(),
        Err(TokenRefusal::WrongHost)
    );
    assert_eq!(
        db.store
            .join_host(&rejoin, "sha256:j2", "host-j")
            .await
            .unwrap(),
        Ok(())
    );
    assert_eq!(db.store.agent_cert_host("sha256:jj").await.unwrap(), None);
    assert_eq!(
        db.store
            .agent_cert_host("sha256:j2")
            .await
            .unwrap()
            .as_deref(),
        Some("host-j")
    );
    // A revoked token joins nobody.
    let revoked = db
        .store
        .join_token_create("oops", 60_000, 10)
        .await
        .unwrap();
    let id = revoked.split('.').nth(1).unwrap();
    assert!(db.store.join_token_revoke(id).await.unwrap());
    assert!(!db.store.join_token_revoke("nosuchid").await.unwrap());
    assert_eq!(
        db.store
            .join_host(&revoked, "sha256:r", "host-rv")
            .await
            .unwrap(),
        Err(TokenRefusal::UsedUp)
    );
    let listed = db.store.join_tokens().await.unwrap();
    assert_eq!(listed.len(), 6);
    assert_eq!(
        listed
            .iter()
            .filter(|l| l.host_id.as_deref() == Some("host-j"))
            .count(),
        1
    );
    assert!(listed
        .iter()
        .all(|l| !t.contains(&l.description) || l.uses_left == 0));
    add_host(&db.store, "host-a", 2).await;
    db.store
        .agent_cert_add("sha256:aa", "host-a")
        .await
        .unwrap();
    db.store
        .agent_cert_add("sha256:aa", "host-a")
        .await
        .unwrap();
    assert_eq!(
        db.store
            .agent_cert_host("sha256:aa")
            .await
            .unwrap()
            .as_deref(),
        Some("host-a")
    );
    assert_eq!(db.store.agent_cert_host("sha256:bb").await.unwrap(), None);

    // A host with an instance cannot be removed; an empty one can, and its
    // certificates stop working.
    let s = tenant(&db.store, "t1").await;
    assert!(matches!(
        create(&db.store, &s, inst("ins-aaaaaaa1", "host-a", &[0])).await,
        Ok(Created::New(_))
    ));
    assert!(db.store.host_remove("host-a").await.is_err());
    db.store
        .instances_transition(
            &s,
            &["ins-aaaaaaa1".to_string()],
            Operation::Terminate,
            "r",
            &TransitionOpts::default(),
        )
        .await
        .unwrap();
    let (generation, _) = db.store.host_desired("host-a").await.unwrap();
    db.store
        .host_report(
            "host-a",
            generation,
            &[obs("ins-aaaaaaa1", 99, Observed::Absent)],
            &[],
        )
        .await
        .unwrap();
    db.store.host_remove("host-a").await.unwrap();
    assert_eq!(db.store.agent_cert_host("sha256:aa").await.unwrap(), None);
    assert!(db.store.host_get("host-a").await.unwrap().is_none());
    assert!(db.store.host_remove("host-a").await.is_err(), "gone");
});

both!(command_tasks_settle_once_and_stay_walled, |db| {
    use gpucloud_store::commands::{NewInvocation, TaskOutcome, TaskQuery};
    let s = tenant(&db.store, "t1").await;
    let other = tenant(&db.store, "t2").await;
    add_host(&db.store, "host-a", 2).await;
    let inv = NewInvocation {
        new_command: true,
        library_max: 500,
        command_id: "cmd-aaaaaaa1".into(),
        invocation_id: "inv-aaaaaaa1".into(),
        name: "probe".into(),
        description: String::new(),
        content: "ZWNobyBoaQ==".into(),
        command_type: "SHELL".into(),
        working_directory: "/root".into(),
        timeout_s: 60,
        username: "root".into(),
        saved: false,
        tasks: vec![(
            "invt-aaaaaaa1".into(),
            "ins-aaaaaaa1".into(),
            "host-a".into(),
        )],
    };
    let before = db
        .store
        .host_get("host-a")
        .await
        .unwrap()
        .unwrap()
        .generation;
    db.store.invocation_create(&s, &inv).await.unwrap();
    let after = db
        .store
        .host_get("host-a")
        .await
        .unwrap()
        .unwrap()
        .generation;
    assert!(after > before, "the host is woken");
    let pending = db.store.host_tasks("host-a").await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].status, "PENDING");
    assert_eq!(pending[0].command.content, "ZWNobyBoaQ==");

    let outcome = |status: &str, code: Option<i64>| TaskOutcome {
        task_id: "invt-aaaaaaa1".into(),
        status: status.into(),
        exit_code: code,
        output: "aGkK".into(),
        dropped: 0,
        started_ms: Some(1),
        ended_ms: code.map(|_| 2),
        error: String::new(),
    };
    db.store
        .host_report("host-a", after, &[], &[outcome("RUNNING", None)])
        .await
        .unwrap();
    // Another host cannot settle this host's task.
    add_host(&db.store, "host-b", 2).await;
    db.store
        .host_report("host-b", 1, &[], &[outcome("FAILED", Some(9))])
        .await
        .unwrap();
    db.store
        .host_report("host-a", after, &[], &[outcome("SUCCESS", Some(0))])
        .await
        .unwrap();
    // A late, repeated RUNNING does not undo the outcome.
    db.store
        .host_report("host-a", after, &[], &[outcome("RUNNING", None)])
        .await
        .unwrap();
    let q = TaskQuery {
        limit: 100,
        ..Default::default()
    };
    let (total, tasks) = db.store.tasks(&s, &q).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!(
        (tasks[0].status.as_str(), tasks[0].exit_code),
        ("SUCCESS", Some(0))
    );
    assert!(db.store.host_tasks("host-a").await.unwrap().is_empty());
    let (n, invs) = db.store.invocations(&s, &[], &[], 0, 10).await.unwrap();
    assert_eq!((n, invs[0].status()), (1, "SUCCESS"));
    // Walls: the other tenant sees none of it, even by ID.
    let by_id = TaskQuery {
        invocation_ids: vec!["inv-aaaaaaa1".into()],
        limit: 100,
        ..Default::default()
    };
    assert_eq!(db.store.tasks(&other, &by_id).await.unwrap().0, 0);
    assert_eq!(
        db.store
            .invocations(&other, &["inv-aaaaaaa1".into()], &[], 0, 10)
            .await
            .unwrap()
            .0,
        0
    );

    // A task that never gets a result ends TASK_TIMEOUT after its timeout.
    let mut lost = inv.clone();
    lost.command_id = "cmd-aaaaaaa2".into();
    lost.invocation_id = "inv-aaaaaaa2".into();
    lost.timeout_s = 0;
    lost.tasks = vec![(
        "invt-aaaaaaa2".into(),
        "ins-aaaaaaa1".into(),
        "host-a".into(),
    )];
    db.store.invocation_create(&s, &lost).await.unwrap();
    assert_eq!(db.store.tasks_expire(60_000).await.unwrap(), 0, "not yet");
    assert_eq!(db.store.tasks_expire(-1).await.unwrap(), 1);
    let (_, t) = db
        .store
        .tasks(
            &s,
            &TaskQuery {
                task_ids: vec!["invt-aaaaaaa2".into()],
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(t[0].status, "TASK_TIMEOUT");
    assert_eq!(
        db.store.tasks_expire(-1).await.unwrap(),
        0,
        "final states stay"
    );

    // A task its host started late (it was unreachable, say) runs its full
    // timeout from the start the host reported, not from its creation.
    let mut late = inv.clone();
    late.command_id = "cmd-aaaaaaa3".into();
    late.invocation_id = "inv-aaaaaaa3".into();
    late.timeout_s = 1;
    late.tasks = vec![(
        "invt-aaaaaaa3".into(),
        "ins-aaaaaaa1".into(),
        "host-a".into(),
    )];
    db.store.invocation_create(&s, &late).await.unwrap();
    let created = std::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let running = TaskOutcome {
        task_id: "invt-aaaaaaa3".into(),
        ended_ms: None,
        ..outcome("RUNNING", None)
    };
    db.store
        .host_report("host-a", after, &[], &[running])
        .await
        .unwrap();
    // By its creation it is past due (1 s timeout, no grace); by its start
    // it is not (for another second).
    assert!(created.elapsed() >= std::time::Duration::from_millis(1500));
    assert_eq!(db.store.tasks_expire(0).await.unwrap(), 0);
    assert_eq!(db.store.tasks_expire(-60_000).await.unwrap(), 1);
});

both!(cordoned_and_unreachable_hosts_take_no_claims, |db| {
    use gpucloud_store::hosts::AdminState;
    let s = tenant(&db.store, "t1").await;
    add_host(&db.store, "host-a", 8).await;
    db.store
        .host_set_admin("host-a", AdminState::Cordoned)
        .await
        .unwrap();
    assert!(matches!(
        create(&db.store, &s, inst("ins-aaaaaaa1", "host-a", &[0])).await,
        Err(TxError::HostConflict(_))
    ));
    db.store
        .host_set_admin("host-a", AdminState::Draining)
        .await
        .unwrap();
    assert!(create(&db.store, &s, inst("ins-aaaaaaa1", "host-a", &[0]))
        .await
        .is_err());
    db.store
        .host_set_admin("host-a", AdminState::Active)
        .await
        .unwrap();
    db.store
        .host_set_state("host-a", "UNREACHABLE", "silent")
        .await
        .unwrap();
    assert!(create(&db.store, &s, inst("ins-aaaaaaa1", "host-a", &[0]))
        .await
        .is_err());
    db.store
        .host_set_state("host-a", "READY", "")
        .await
        .unwrap();
    assert!(matches!(
        create(&db.store, &s, inst("ins-aaaaaaa1", "host-a", &[0])).await,
        Ok(Created::New(_))
    ));
    assert!(
        db.store.gpu_claims().await.unwrap().len() == 1,
        "nothing leaked from the refusals"
    );
});

both!(console_tokens_are_single_use_and_expire, |db| {
    let s = &db.store;
    let made = s
        .console_session_create("tok-live", "cs-a", 1, "ins-aaaaaaaa", "host-a", 15_000)
        .await
        .unwrap();
    s.console_session_create("tok-old", "cs-b", 1, "ins-aaaaaaaa", "host-a", -1)
        .await
        .unwrap();
    // Two servers redeeming at once: exactly one wins.
    let (a, b) = tokio::join!(
        s.console_session_redeem("tok-live"),
        s.console_session_redeem("tok-live")
    );
    let won: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(won, vec![made]);
    assert_eq!(s.console_session_redeem("tok-live").await.unwrap(), None);
    assert_eq!(s.console_session_redeem("tok-old").await.unwrap(), None);
    assert_eq!(s.console_session_redeem("nothing").await.unwrap(), None);
});

both!(console_bytes_cross_servers_through_the_database, |db| {
    use gpucloud_store::consoles::Put;
    let s = &db.store;
    s.console_session_create("tok-r", "cs-r", 1, "ins-aaaaaaaa", "host-a", 15_000)
        .await
        .unwrap();
    let long_ago = 0;
    // Not redeemed yet: not live, nothing taken or queued.
    assert!(s
        .console_live_for_host("host-a", long_ago)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.console_agent_input("cs-r", "host-a", long_ago, 1024)
            .await
            .unwrap(),
        None
    );
    assert!(s.console_session_redeem("tok-r").await.unwrap().is_some());
    assert_eq!(
        s.console_live_for_host("host-a", long_ago).await.unwrap(),
        vec![("cs-r".to_string(), "ins-aaaaaaaa".to_string())]
    );
    assert!(s
        .console_live_for_host("host-b", long_ago)
        .await
        .unwrap()
        .is_empty());
    // A WebSocket's server not seen since `fresh_after`: not live.
    let future = i64::MAX / 2;
    assert!(s
        .console_live_for_host("host-a", future)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.console_agent_input("cs-r", "host-a", future, 1024)
            .await
            .unwrap(),
        None
    );

    // Tenant → VM, in order, taken once, only by the session's host.
    assert_eq!(
        s.console_ws_input("cs-r", b"ls", 2).await.unwrap(),
        Put::Queued
    );
    assert_eq!(
        s.console_ws_input("cs-r", b" -l\n", 2).await.unwrap(),
        Put::Queued
    );
    // The agent does not keep up: the backlog stops growing.
    assert_eq!(
        s.console_ws_input("cs-r", b"!", 2).await.unwrap(),
        Put::Full
    );
    assert_eq!(
        s.console_agent_input("cs-r", "host-b", long_ago, 1024)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.console_agent_input("cs-r", "host-a", long_ago, 1024)
            .await
            .unwrap(),
        Some(b"ls -l\n".to_vec())
    );
    assert_eq!(
        s.console_agent_input("cs-r", "host-a", long_ago, 1024)
            .await
            .unwrap(),
        Some(Vec::new())
    );
    // A budget: whole chunks, oldest first, at least one.
    assert_eq!(
        s.console_ws_input("cs-r", &[b'x'; 600], 8).await.unwrap(),
        Put::Queued
    );
    assert_eq!(
        s.console_ws_input("cs-r", &[b'y'; 600], 8).await.unwrap(),
        Put::Queued
    );
    assert_eq!(
        s.console_agent_input("cs-r", "host-a", long_ago, 100)
            .await
            .unwrap(),
        Some(vec![b'x'; 600])
    );
    assert_eq!(
        s.console_agent_input("cs-r", "host-a", long_ago, 1024)
            .await
            .unwrap(),
        Some(vec![b'y'; 600])
    );

    // VM → tenant, up to a backlog.
    for chunk in [&b"a"[..], b"b", b"c"] {
        assert_eq!(
            s.console_agent_output("cs-r", "host-a", long_ago, chunk, 3)
                .await
                .unwrap(),
            Put::Queued
        );
    }
    assert_eq!(
        s.console_agent_output("cs-r", "host-a", long_ago, b"d", 3)
            .await
            .unwrap(),
        Put::Full
    );
    // As much as the WebSocket has room for, in order.
    let p = s.console_ws_poll("cs-r", true, long_ago, 2).await.unwrap();
    assert_eq!(p.output, vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(p.ended, None);
    assert!(!p.lapsed);
    assert!(p.agent_seen_at.is_some());
    let p = s
        .console_ws_poll("cs-r", false, long_ago, 64)
        .await
        .unwrap();
    assert_eq!(p.output, vec![b"c".to_vec()]);

    // The agent fails: the output queued before still reaches the tenant,
    // then the reason; the session is no longer live.
    assert_eq!(
        s.console_agent_output("cs-r", "host-a", long_ago, b"bye", 8)
            .await
            .unwrap(),
        Put::Queued
    );
    s.console_agent_fail("cs-r", "host-b", "not mine")
        .await
        .unwrap();
    s.console_agent_fail("cs-r", "host-a", "the VM stopped")
        .await
        .unwrap();
    let p = s.console_ws_poll("cs-r", true, long_ago, 64).await.unwrap();
    assert_eq!(p.output, vec![b"bye".to_vec()]);
    assert!(!p.lapsed, "an ended session is ended, not lapsed");
    assert_eq!(p.ended, Some(Some("the VM stopped".to_string())));
    assert_eq!(
        s.console_ws_input("cs-r", b"late", 8).await.unwrap(),
        Put::Ended
    );
    assert_eq!(
        s.console_agent_output("cs-r", "host-a", long_ago, b"late", 8)
            .await
            .unwrap(),
        Put::Ended
    );
    assert!(s
        .console_live_for_host("host-a", long_ago)
        .await
        .unwrap()
        .is_empty());
    s.console_ws_close("cs-r").await.unwrap();
    assert_eq!(
        s.console_ws_poll("cs-r", false, long_ago, 64)
            .await
            .unwrap()
            .ended,
        Some(Some("the VM stopped".to_string())),
        "closing keeps the reason"
    );

    // A session its WebSocket's server let go stale cannot be revived.
    s.console_session_create("tok-s", "cs-s", 1, "ins-aaaaaaaa", "host-a", 15_000)
        .await
        .unwrap();
    assert!(s.console_session_redeem("tok-s").await.unwrap().is_some());
    let p = s.console_ws_poll("cs-s", true, future, 64).await.unwrap();
    assert!(p.lapsed && p.ended.is_none());
    assert!(s
        .console_live_for_host("host-a", future)
        .await
        .unwrap()
        .is_empty());
    assert!(
        !s.console_ws_poll("cs-s", true, long_ago, 64)
            .await
            .unwrap()
            .lapsed
    );
});

both!(
    images_are_public_or_private_and_keep_their_agent_flag,
    |db| {
        use gpucloud_store::images::ImageRow;
        let a = tenant(&db.store, "img-a").await;
        let b = tenant(&db.store, "img-b").await;
        let row = |id: &str, owner: Option<i64>, agent: bool| ImageRow {
            image_id: id.into(),
            app_id: owner,
            name: id.into(),
            os_name: "Debian".into(),
            platform: "Debian".into(),
            description: String::new(),
            size_gib: 2,
            architecture: "x86_64".into(),
            image_type: "PUBLIC_IMAGE".into(),
            source: "IMPORT".into(),
            state: "NORMAL".into(),
            runtime: "qemu".into(),
            location: format!("{id}/disk.qcow2"),
            gpu_driver: false,
            guest_agent: agent,
            tags: vec![("runtime".into(), "qemu".into())],
            created_at: 1,
        };
        db.store
            .image_upsert(&row("img-noagent", None, false))
            .await
            .unwrap();
        db.store
            .image_upsert(&row("img-private", Some(a.app_id()), true))
            .await
            .unwrap();
        let got = db
            .store
            .image_visible(&b, "img-noagent")
            .await
            .unwrap()
            .unwrap();
        assert!(!got.guest_agent);
        assert_eq!(got, row("img-noagent", None, false));
        // Re-importing with an agent flips the flag in place.
        db.store
            .image_upsert(&row("img-noagent", None, true))
            .await
            .unwrap();
        assert!(
            db.store
                .image_visible(&a, "img-noagent")
                .await
                .unwrap()
                .unwrap()
                .guest_agent
        );
        // A private image is its owner's alone.
        assert!(db
            .store
            .image_visible(&b, "img-private")
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            db.store
                .images_visible(&a)
                .await
                .unwrap()
                .iter()
                .map(|i| i.image_id.as_str())
                .collect::<Vec<_>>(),
            ["img-noagent", "img-private"]
        );
    }
);

both!(
    the_command_library_keeps_names_unique_and_history_intact,
    |db| {
        use gpucloud_store::commands::{
            CommandChanges, CommandQuery, CommandRow, NewInvocation, TaskQuery,
        };
        let s = tenant(&db.store, "lib1").await;
        let other = tenant(&db.store, "lib2").await;
        add_host(&db.store, "host-a", 2).await;
        let cmd = |id: &str, name: &str| CommandRow {
            command_id: id.into(),
            name: name.into(),
            description: "d".into(),
            content: "ZWNobyAx".into(),
            command_type: "SHELL".into(),
            working_directory: "/root".into(),
            timeout_s: 60,
            username: "root".into(),
        };
        let all = CommandQuery {
            limit: 100,
            ..Default::default()
        };
        db.store
            .command_create(&s, &cmd("cmd-lib00001", "deploy"), 2)
            .await
            .unwrap();
        // Names are unique in a library, not across tenants.
        assert!(matches!(
            db.store
                .command_create(&s, &cmd("cmd-lib00002", "deploy"), 2)
                .await,
            Err(TxError::Cloud(CloudError::TatCommandNameDuplicated(_)))
        ));
        db.store
            .command_create(&other, &cmd("cmd-lib00003", "deploy"), 2)
            .await
            .unwrap();
        db.store
            .command_create(&s, &cmd("cmd-lib00004", "backup"), 2)
            .await
            .unwrap();
        assert!(matches!(
            db.store
                .command_create(&s, &cmd("cmd-lib00005", "third"), 2)
                .await,
            Err(TxError::Cloud(CloudError::TatCommandQuota(2)))
        ));
        let (n, list) = db.store.commands(&s, &all).await.unwrap();
        assert_eq!(n, 2);
        assert!(list.iter().all(|c| c.command.command_id != "cmd-lib00003"));
        let by_name = CommandQuery {
            names: vec!["backup".into()],
            limit: 10,
            ..Default::default()
        };
        assert_eq!(
            db.store.commands(&s, &by_name).await.unwrap().1[0]
                .command
                .command_id,
            "cmd-lib00004"
        );

        // An invocation of a saved command keeps what it ran.
        let inv = NewInvocation {
            new_command: false,
            library_max: 2,
            command_id: "cmd-lib00001".into(),
            invocation_id: "inv-lib00001".into(),
            name: "deploy".into(),
            description: "d".into(),
            content: "ZWNobyAx".into(),
            command_type: "SHELL".into(),
            working_directory: "/tmp".into(),
            timeout_s: 30,
            username: "nobody".into(),
            saved: true,
            tasks: vec![(
                "invt-lib00001".into(),
                "ins-lib00001".into(),
                "host-a".into(),
            )],
        };
        db.store.invocation_create(&s, &inv).await.unwrap();
        // Renaming onto a taken name is refused; other changes apply.
        assert!(matches!(
            db.store
                .command_modify(
                    &s,
                    "cmd-lib00001",
                    &CommandChanges {
                        name: Some("backup".into()),
                        ..Default::default()
                    }
                )
                .await,
            Err(TxError::Cloud(CloudError::TatCommandNameDuplicated(_)))
        ));
        db.store
            .command_modify(
                &s,
                "cmd-lib00001",
                &CommandChanges {
                    content: Some("ZWNobyAy".into()),
                    timeout_s: Some(5),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let now = db
            .store
            .command_get(&s, "cmd-lib00001")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (now.command.content.as_str(), now.command.timeout_s),
            ("ZWNobyAy", 5)
        );
        assert_eq!(now.command.name, "deploy");
        let ran = db.store.host_tasks("host-a").await.unwrap();
        assert_eq!(
            (
                ran[0].command.content.as_str(),
                ran[0].command.timeout_s,
                ran[0].command.working_directory.as_str(),
                ran[0].command.username.as_str()
            ),
            ("ZWNobyAx", 30, "/tmp", "nobody")
        );
        // Another tenant can neither change nor delete it.
        assert!(matches!(
            db.store
                .command_modify(&other, "cmd-lib00001", &CommandChanges::default())
                .await,
            Err(TxError::Cloud(CloudError::TatCommandNotFound(_)))
        ));
        assert!(matches!(
            db.store
                .commands_delete(&other, &["cmd-lib00001".into()])
                .await,
            Err(TxError::Cloud(CloudError::TatCommandNotFound(_)))
        ));
        // Deleting is all or none, leaves the history, and frees the name.
        assert!(matches!(
            db.store
                .commands_delete(&s, &["cmd-lib00001".into(), "cmd-nothere1".into()])
                .await,
            Err(TxError::Cloud(CloudError::TatCommandNotFound(_)))
        ));
        assert_eq!(db.store.commands(&s, &all).await.unwrap().0, 2);
        db.store
            .commands_delete(&s, &["cmd-lib00001".into()])
            .await
            .unwrap();
        assert!(db
            .store
            .command_get(&s, "cmd-lib00001")
            .await
            .unwrap()
            .is_none());
        let (_, tasks) = db
            .store
            .tasks(
                &s,
                &TaskQuery {
                    limit: 10,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (
                tasks[0].command.name.as_str(),
                tasks[0].command.content.as_str()
            ),
            ("deploy", "ZWNobyAx")
        );
        // A deleted command cannot be invoked.
        let mut again = inv.clone();
        again.invocation_id = "inv-lib00002".into();
        again.tasks = vec![(
            "invt-lib00002".into(),
            "ins-lib00001".into(),
            "host-a".into(),
        )];
        assert!(matches!(
            db.store.invocation_create(&s, &again).await,
            Err(TxError::Cloud(CloudError::TatCommandNotFound(_)))
        ));
        db.store
            .command_create(&s, &cmd("cmd-lib00006", "deploy"), 2)
            .await
            .unwrap();
    }
);

both!(concurrent_client_token_retries_share_one_result, |db| {
    // The quota fits one call's instances, not two: a retry that waits
    // behind the first must answer with its result, not a quota refusal.
    let s = tenant(&db.store, "t1").await;
    db.store.tenant_set_quota(s.app_id(), 2).await.unwrap();
    add_host(&db.store, "host-a", 8).await;
    let calls: Vec<_> = (0..4i64)
        .map(|n| {
            let store = db.store.clone();
            tokio::spawn(async move {
                let insts = vec![
                    inst(&format!("ins-tokc{n}0a0"), "host-a", &[2 * n]),
                    inst(&format!("ins-tokc{n}0b0"), "host-a", &[2 * n + 1]),
                ];
                store
                    .instances_create(&s, &batch(insts, Some("same-token")))
                    .await
            })
        })
        .collect();
    let mut new = Vec::new();
    let mut existing = Vec::new();
    for c in calls {
        match c.await.unwrap().expect("every retry gets the one result") {
            Created::New(ids) => new.push(ids),
            Created::Existing(ids) => existing.push(ids),
        }
    }
    assert_eq!(new.len(), 1, "one call creates");
    assert!(existing.iter().all(|ids| *ids == new[0]), "{existing:?}");
    assert_eq!(db.store.gpu_claims().await.unwrap().len(), 2);
});

both!(a_stale_plan_is_refused_for_another_try, |db| {
    let s = tenant(&db.store, "t1").await;
    add_host(&db.store, "host-a", 8).await;
    let id = "ins-stal0001";
    create(&db.store, &s, inst(id, "host-a", &[0, 1, 2, 3]))
        .await
        .unwrap();
    db.store
        .host_report("host-a", 0, &[obs(id, 1, Observed::Running)], &[])
        .await
        .unwrap();
    let stop_charging = TransitionOpts {
        stopped_mode: Some("STOP_CHARGING".into()),
        ..Default::default()
    };
    let before = seen(&db.store, &s, id).await;
    db.store
        .instances_transition(&s, &[id.into()], Operation::Stop, "r", &stop_charging)
        .await
        .unwrap();
    db.store
        .host_report("host-a", 0, &[obs(id, 2, Observed::Stopped)], &[])
        .await
        .unwrap();
    assert!(db.store.gpu_claims().await.unwrap().is_empty());
    // A resize planned before the stop released everything.
    let two = NewShape {
        instance_type: "GT5.12XLARGE480".into(),
        cpu: 48,
        memory_gib: 480,
        gpu_count: 2,
    };
    let plan = ResizePlan::SameHost {
        add: vec![],
        drop: vec![2, 3],
    };
    assert!(matches!(
        db.store
            .instance_resize(&s, id, "r", &two, &plan, before)
            .await,
        Err(TxError::HostConflict(h)) if h == "host-a"
    ));
    // A start planned as if the resources were still held claims nothing.
    assert!(matches!(
        db.store
            .instances_transition(
                &s,
                &[id.into()],
                Operation::Start,
                "r",
                &TransitionOpts::default()
            )
            .await,
        Err(TxError::HostConflict(_))
    ));
    assert_eq!(
        state_of(&db.store, &s, id).await,
        Some(InstanceState::Stopped)
    );
    let host = db.store.host_get("host-a").await.unwrap().unwrap();
    assert_eq!(
        (host.cpu_used, host.mem_used_mib),
        (0, 0),
        "nothing half done"
    );
    // Planned from what is there now, it goes through.
    let mut reclaim = TransitionOpts::default();
    reclaim.reclaims.insert(id.into(), vec![0, 1, 2, 3]);
    db.store
        .instances_transition(&s, &[id.into()], Operation::Start, "r", &reclaim)
        .await
        .unwrap();
    assert_eq!(db.store.gpu_claims().await.unwrap().len(), 4);
    // The reverse: a re-claim for an instance that holds its resources.
    db.store
        .host_report("host-a", 0, &[obs(id, 3, Observed::Running)], &[])
        .await
        .unwrap();
    db.store
        .instances_transition(
            &s,
            &[id.into()],
            Operation::Stop,
            "r",
            &TransitionOpts::default(),
        )
        .await
        .unwrap();
    db.store
        .host_report("host-a", 0, &[obs(id, 4, Observed::Stopped)], &[])
        .await
        .unwrap();
    assert!(matches!(
        db.store
            .instances_transition(&s, &[id.into()], Operation::Start, "r", &reclaim)
            .await,
        Err(TxError::HostConflict(_))
    ));
});

both!(
    dropped_gpus_stay_held_while_the_host_fails_the_new_shape,
    |db| {
        let s = tenant(&db.store, "t1").await;
        add_host(&db.store, "host-a", 8).await;
        let id = "ins-drop0001";
        create(&db.store, &s, inst(id, "host-a", &[0, 1, 2, 3]))
            .await
            .unwrap();
        db.store
            .host_report("host-a", 0, &[obs(id, 1, Observed::Running)], &[])
            .await
            .unwrap();
        let two = NewShape {
            instance_type: "GT5.12XLARGE480".into(),
            cpu: 48,
            memory_gib: 480,
            gpu_count: 2,
        };
        // ForceStop: the running instance restarts into its new shape.
        db.store
            .instance_resize(
                &s,
                id,
                "r",
                &two,
                &ResizePlan::SameHost {
                    add: vec![],
                    drop: vec![2, 3],
                },
                seen(&db.store, &s, id).await,
            )
            .await
            .unwrap();
        // The host could not restart it: the old VM may still hold all four.
        db.store
            .host_report("host-a", 0, &[obs(id, 2, Observed::Failed)], &[])
            .await
            .unwrap();
        assert_eq!(db.store.gpu_claims().await.unwrap().len(), 4);
        db.store
            .host_report("host-a", 0, &[obs(id, 2, Observed::Running)], &[])
            .await
            .unwrap();
        assert_eq!(db.store.gpu_claims().await.unwrap().len(), 2);
    }
);

both!(
    terminating_a_moved_instance_still_lets_the_old_host_let_go,
    |db| {
        let s = tenant(&db.store, "t1").await;
        add_host(&db.store, "host-a", 8).await;
        add_host(&db.store, "host-b", 8).await;
        let id = "ins-mvtm0001";
        create(&db.store, &s, inst(id, "host-a", &[0]))
            .await
            .unwrap();
        db.store
            .host_report("host-a", 0, &[obs(id, 1, Observed::Running)], &[])
            .await
            .unwrap();
        db.store
            .instances_transition(
                &s,
                &[id.into()],
                Operation::Stop,
                "r",
                &TransitionOpts::default(),
            )
            .await
            .unwrap();
        db.store
            .host_report("host-a", 0, &[obs(id, 2, Observed::Stopped)], &[])
            .await
            .unwrap();
        let one = NewShape {
            instance_type: "GT5.6XLARGE240".into(),
            cpu: 24,
            memory_gib: 240,
            gpu_count: 1,
        };
        db.store
            .instance_resize(
                &s,
                id,
                "r",
                &one,
                &ResizePlan::Move {
                    host_id: "host-b".into(),
                    gpus: vec![0],
                },
                seen(&db.store, &s, id).await,
            )
            .await
            .unwrap();
        db.store
            .host_report("host-b", 0, &[obs(id, 3, Observed::Running)], &[])
            .await
            .unwrap();
        // host-a has not let go yet (slow, or unreachable) when it is terminated.
        let gen_a = db
            .store
            .host_get("host-a")
            .await
            .unwrap()
            .unwrap()
            .generation;
        db.store
            .instances_transition(
                &s,
                &[id.into()],
                Operation::Terminate,
                "r",
                &TransitionOpts::default(),
            )
            .await
            .unwrap();
        assert!(
            db.store
                .host_get("host-a")
                .await
                .unwrap()
                .unwrap()
                .generation
                > gen_a,
            "the old host hears of it"
        );
        db.store
            .host_report("host-b", 0, &[obs(id, 4, Observed::Absent)], &[])
            .await
            .unwrap();
        assert_eq!(state_of(&db.store, &s, id).await, None, "terminated");
        let on_a = |claims: Vec<(String, String, String, bool)>| {
            claims.iter().filter(|c| c.2 == "host-a").count()
        };
        assert_eq!(
            on_a(db.store.gpu_claims().await.unwrap()),
            1,
            "still held on host-a"
        );
        let (_, desired) = db.store.host_desired("host-a").await.unwrap();
        let d = desired
            .iter()
            .find(|d| d.instance_id == id)
            .expect("host-a still told");
        assert_eq!(d.power, DesiredPower::Absent);
        // It lets go (a report from before the terminate's generation counts too).
        db.store
            .host_report("host-a", 0, &[obs(id, 3, Observed::Absent)], &[])
            .await
            .unwrap();
        assert_eq!(on_a(db.store.gpu_claims().await.unwrap()), 0);
        let a = db.store.host_get("host-a").await.unwrap().unwrap();
        assert_eq!((a.cpu_used, a.mem_used_mib), (0, 0));
        let (_, desired) = db.store.host_desired("host-a").await.unwrap();
        assert!(desired.iter().all(|d| d.instance_id != id), "done with it");
    }
);
