//! GPU health end to end on the server side: an agent reports a fenced GPU
//! (as the NVML monitor does after an XID); the GPU is no longer scheduled,
//! and the instance holding it sees which of its GPUs failed.

mod common;

use common::*;
use gpucloud_agent_api::{ControlPlane, HostInventory};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_gpu_is_not_scheduled_and_its_instance_shows_it() {
    let cloud = TestCloud::start("1*H100x8").await;
    let (t, _) = cloud.tenant("t").await;
    let first = run_one(&t, "GT5.6XLARGE240").await;
    let inst = wait_state(&t, &first, "RUNNING").await;
    let held = inst["GPUInfo"]["GPUId"][0].as_str().unwrap().to_string();
    assert!(
        inst["GPUInfo"].get("GPUHealth").is_none(),
        "healthy instances say nothing extra"
    );

    // The agent reports the held GPU and one free GPU fenced.
    let host = cloud
        .app
        .store
        .host_get(&cloud.hosts[0])
        .await
        .unwrap()
        .unwrap();
    let mut inv: HostInventory = serde_json::from_value(host.inventory).unwrap();
    let free = inv
        .gpus
        .iter()
        .find(|g| g.uuid != held)
        .unwrap()
        .uuid
        .clone();
    for g in inv
        .gpus
        .iter_mut()
        .filter(|g| g.uuid == held || g.uuid == free)
    {
        g.healthy = false;
        g.health_reason = "XID 79 (GPU has fallen off the bus)".into();
    }
    cloud.app.gateway.register(&inv).await.unwrap();

    let i = t
        .cvm("DescribeInstances", json!({"InstanceIds": [first]}))
        .await
        .unwrap()["InstanceSet"][0]
        .clone();
    assert_eq!(
        i["GPUInfo"]["GPUHealth"],
        json!([{"GPUId": held, "State": "UNHEALTHY", "Reason": "XID 79 (GPU has fallen off the bus)"}])
    );
    // 8 GPUs, one held, two fenced (one of them the held one): 6 more fit.
    let mut ok = 0;
    for _ in 0..8 {
        match t.cvm("RunInstances", run_params("GT5.6XLARGE240")).await {
            Ok(_) => ok += 1,
            Err(e) => assert!(e.code().unwrap().starts_with("ResourceInsufficient"), "{e}"),
        }
    }
    assert_eq!(ok, 6);
    let gpus = cloud
        .app
        .store
        .gpu_list(Some(&cloud.hosts[0]))
        .await
        .unwrap();
    let on_free = gpus.iter().find(|g| g.gpu_id == free).unwrap();
    assert_eq!(
        on_free.claimed_by, None,
        "the fenced free GPU was never given out"
    );
    assert_eq!(on_free.health, "UNHEALTHY");

    // Repaired and reported healthy: back in service.
    for g in inv.gpus.iter_mut() {
        g.healthy = true;
        g.health_reason.clear();
    }
    cloud.app.gateway.register(&inv).await.unwrap();
    t.cvm("RunInstances", run_params("GT5.6XLARGE240"))
        .await
        .unwrap();
    let i = t
        .cvm("DescribeInstances", json!({"InstanceIds": [first]}))
        .await
        .unwrap()["InstanceSet"][0]
        .clone();
    assert!(i["GPUInfo"].get("GPUHealth").is_none(), "{i}");
}
