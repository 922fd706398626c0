//! `walletwatch bench compare` on the real local node: both paths see the
//! same transfers and the report has the documented shape. (The figures are
//! benchmark output, recorded in docs/benchmarks.md, not asserted here.)

mod common;

use common::walletwatch;
use serde_json::Value;
use ww_test_utils::LocalNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_reports_both_paths_on_the_same_traffic() {
    let node = LocalNode::start().await.expect("local node");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let payer_file = data_dir.path().join("payer.json");
    let payer = node.keygen(&payer_file).await.expect("keygen");
    node.airdrop(&payer, 10_000_000_000).await.expect("fund");
    let output = walletwatch(data_dir.path())
        .args([
            "bench",
            "compare",
            "--duration",
            "12",
            "--interval",
            "2",
            "--wallets",
            "3",
            "--transfers-per-minute",
            "40",
        ])
        .arg("--payer")
        .arg(&payer_file)
        .args(["--rpc-url", &node.rpc_url, "--ws-url", &node.ws_url])
        .output()
        .expect("bench compare");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    let sent = report["transfers_sent"].as_u64().expect("transfers_sent");
    assert!(sent > 0, "{report}");
    assert_eq!(report["transfer_errors"], 0, "{report}");
    for path in ["websocket", "polling"] {
        assert_eq!(report[path]["trade_detections"].as_u64(), Some(sent), "{path} missed a transfer: {report}");
        assert_eq!(report[path]["errors"], 0, "{report}");
        for field in ["avg_latency_ms", "min_latency_ms", "max_latency_ms", "uptime_percent", "rpc_calls_per_hour"] {
            assert!(report[path][field].is_number(), "{path}.{field} missing: {report}");
        }
    }
    assert!(report["websocket"]["reconnects"].is_number());
    assert!(report["polling"]["cycles"].as_u64().is_some_and(|cycles| cycles > 0));
    for field in ["latency_reduction_ms", "latency_reduction_percent", "faster_detections"] {
        assert!(report["improvement"][field].is_number(), "{report}");
    }
    assert!(report["recommendation"].as_str().is_some_and(|text| !text.is_empty()));
    assert!(report["benchmark_duration_seconds"].as_f64().is_some_and(|seconds| seconds >= 12.0));
}
