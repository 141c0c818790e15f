//! The 2018 API through the compatibility adapter, driven as a 2018 client drives it: raw
//! JSON-RPC over HTTP (positional and named params, the generated GET routes, multipart), the
//! 2018 WebSocket, and `curl` with the README's own command. The cases port the active 2018 test
//! list (reference §10): TestJobs, TestTurboJobs, TestFailureConditions, TestGpuJobs and
//! TestJobCleanup, one `#[tokio::test]` per 2018 class (each case a commented block).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use dcc_e2e::{Answer, Api, Dcc, IMAGE, Redis, Role, Ws, assert_no_redis_trace, eventually, ws_next};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// A 2018 client of one server.
#[derive(Clone)]
struct Client {
    api: Api,
    port: u16,
}

impl Client {
    fn of(dcc: &Dcc) -> Self {
        Client {
            api: dcc.api(),
            port: dcc.port,
        }
    }

    fn with_key(&self, key: &str) -> Self {
        Client {
            api: self.api.with_key(key),
            port: self.port,
        }
    }

    /// A JSON-RPC call on `path`, as the 2018 client library sent it.
    async fn call_at(&self, path: &str, method: &str, params: Value) -> Answer {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        self.api
            .post_raw(path, body.to_string().into_bytes(), "application/json")
            .await
    }

    async fn call(&self, method: &str, params: Value) -> Answer {
        self.call_at("/v1", method, params).await
    }

    /// The `result` of a call that must succeed.
    async fn result(&self, method: &str, params: Value) -> Value {
        let a = self.call(method, params).await;
        assert_eq!(a.status, 200, "{method}: {:?}", a.body);
        assert_eq!((&a.body["jsonrpc"], &a.body["id"]), (&json!("2.0"), &json!(1)));
        a.body["result"].clone()
    }

    /// A generated GET route.
    async fn get(&self, path: &str) -> Answer {
        self.api.get(path).await
    }

    /// What an absolute URL from a result serves.
    async fn fetch(&self, url: &str) -> (u16, Vec<u8>) {
        let path = url
            .strip_prefix(&self.api.base)
            .unwrap_or_else(|| panic!("{url} is not on this server"));
        self.api.get_bytes(path).await
    }

    async fn fetch_text(&self, url: &str) -> String {
        let (s, b) = self.fetch(url).await;
        assert_eq!(s, 200, "{url}");
        String::from_utf8(b).unwrap()
    }

    /// The 2018 WebSocket's one message for `id`.
    async fn notified(&self, id: &str) -> Value {
        let key = self
            .api
            .key
            .as_ref()
            .map(|k| format!("?access_token={k}"))
            .unwrap_or_default();
        let mut ws = self.ws(&key).await;
        let ask = json!({"method": "batchcompute.jobnotify", "params": {"jobId": id}});
        ws.send(Message::Text(ask.to_string().into())).await.unwrap();
        ws_next(&mut ws).await
    }

    async fn ws(&self, query: &str) -> Ws {
        let url = format!("ws://127.0.0.1:{}/{query}", self.port);
        tokio_tungstenite::connect_async(url).await.expect("websocket").0
    }
}

/// An inline script input and the command running it.
fn script_job(script: &str) -> Value {
    json!({"image": IMAGE, "cmd": ["sh", "/inputs/script.sh"], "inputs": [{"name": "script.sh", "value": script}]})
}

/// 2018's `createTestJobAndExpectedResults`: three known lines and "foo" on stdout, one on
/// stderr, a known value in one output and an inline input copied to another.
fn test_job(secs: u64, gpu: u32) -> Value {
    let script = format!(
        "sleep {secs}\necho line1\necho line2\necho line3\necho foo\necho errline >&2\necho -n known > /outputs/o1\ncp /inputs/in1 /outputs/o2\n"
    );
    let mut job = script_job(&script);
    job["inputs"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "in1", "value": "copied"}));
    job["parameters"] =
        json!({"maxDuration": 2 * secs + 5, "gpu": gpu, "cpus": 1, "DISABLE_NVIDIA_DOCKER_RUNTIME": true});
    job["wait"] = json!(true);
    job
}

/// Checks the result of a [`test_job`].
async fn check_test_job(c: &Client, r: &Value) {
    assert_eq!((&r["status"], &r["exitCode"]), (&json!("success"), &json!(0)), "{r}");
    assert_eq!(
        c.fetch_text(r["stdout"].as_str().unwrap()).await,
        "line1\nline2\nline3\nfoo\n"
    );
    assert_eq!(c.fetch_text(r["stderr"].as_str().unwrap()).await, "errline\n");
    let base = r["outputsBaseUrl"].as_str().unwrap();
    assert_eq!(c.fetch_text(&format!("{base}o1")).await, "known");
    assert_eq!(c.fetch_text(&format!("{base}o2")).await, "copied");
}

/// TestJobs, the JSON-RPC cases.
#[tokio::test]
async fn test_jobs() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let c = Client::of(&dcc);

    // testExitCodeZero, testExitCodeNonZeroScript: positional `submitjob`; the result comes by
    // the WebSocket notification, then `job/result`.
    for (script, code) in [("exit 0", 0), ("exit 3", 3)] {
        let job = script_job(script);
        let r = c
            .result("submitjob", json!([IMAGE, null, job["cmd"], job["inputs"]]))
            .await;
        let id = r["jobId"].as_str().unwrap().to_string();
        let pushed = c.notified(&id).await;
        assert_eq!(pushed["jsonrpc"], "2.0");
        assert_eq!(pushed["result"]["jobId"], json!(id), "{pushed}");
        let a = c.get(&format!("/v1/job/result/{id}")).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        assert_eq!(a.body["result"]["exitCode"], code);
        assert_eq!(
            a.body["result"]["status"], "success",
            "the container ran (2018's meaning)"
        );
        assert_eq!(c.get(&format!("/v1/job/exitcode/{id}")).await.body["result"], code);
    }

    // testExitCodeNonZeroCommand.
    let r = c
        .result(
            "submitJobJson",
            json!({"job": {"image": IMAGE, "cmd": ["sh", "-c", "exit 4"], "wait": true}}),
        )
        .await;
    assert_eq!(r["exitCode"], 4, "{r}");

    // testWaitForJob: `wait` (positional) answers the whole result; stdout holds the echo.
    let r = c
        .result(
            "submitjob",
            json!([
                IMAGE,
                null,
                ["echo", "waited for"],
                [],
                null,
                null,
                null,
                null,
                null,
                null,
                null,
                null,
                true
            ]),
        )
        .await;
    assert_eq!(c.fetch_text(r["stdout"].as_str().unwrap()).await, "waited for\n");

    // testReadMultilineStdout, testWriteStdoutAndStderr, testReadInput, testWriteOutput.
    let mut job = script_job(
        "printf 'one\\n\\ntwo  \\nthree'\necho to-err >&2\ncat /inputs/in.txt >&2\nprintf made > /outputs/out.txt\n",
    );
    job["inputs"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "in.txt", "value": "from input"}));
    job["wait"] = json!(true);
    let r = c.result("submitJobJson", json!({"job": job})).await;
    assert_eq!(c.fetch_text(r["stdout"].as_str().unwrap()).await, "one\n\ntwo  \nthree");
    assert_eq!(c.fetch_text(r["stderr"].as_str().unwrap()).await, "to-err\nfrom input");
    assert_eq!(r["outputs"], json!(["out.txt"]));
    assert_eq!(r["inputs"], json!(["script.sh", "in.txt"]));
    let base = r["outputsBaseUrl"].as_str().unwrap();
    assert_eq!(c.fetch_text(&format!("{base}out.txt")).await, "made");
    // The result.json URL serves the same result.
    let (s, b) = c.fetch(r["resultJson"].as_str().unwrap()).await;
    assert_eq!(s, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&b).unwrap()["outputs"],
        json!(["out.txt"])
    );

    // testBinaryInputAndOutput: base64 inputs come out byte for byte.
    let bytes: Vec<Vec<u8>> = vec![(0..=255).collect(), (0..=255).rev().chain([0, 0, 255]).collect()];
    let mut job = script_job("cp /inputs/b1 /outputs/b1; cp /inputs/b2 /outputs/b2");
    for (i, b) in bytes.iter().enumerate() {
        let blob = json!({"name": format!("b{}", i + 1), "value": STANDARD.encode(b), "encoding": "base64"});
        job["inputs"].as_array_mut().unwrap().push(blob);
    }
    job["wait"] = json!(true);
    let r = c.result("submitJobJson", json!({"job": job})).await;
    let base = r["outputsBaseUrl"].as_str().unwrap();
    for (i, b) in bytes.iter().enumerate() {
        assert_eq!(&c.fetch(&format!("{base}b{}", i + 1)).await.1, b);
    }

    // testRegularRPCSubmissionCustomId, and the container's 2018 and DCC variables.
    let id = format!("custom-{}", dcc_e2e::random_name("id"));
    let job = json!({"id": id, "image": IMAGE, "wait": true,
                     "cmd": ["sh", "-c", "echo $INPUTS $OUTPUTS $CCC_JOB_ID $DCC_JOB_ID $DCC_INPUTS"]});
    let r = c.result("submitJobJson", json!({"job": job})).await;
    assert_eq!(r["jobId"], json!(id));
    assert_eq!(
        c.fetch_text(r["stdout"].as_str().unwrap()).await,
        format!("/inputs /outputs {id} {id} /inputs\n")
    );
    assert_eq!(c.get(&format!("/v1/job/status/{id}")).await.body["result"], "finished");
    // The same job again (without waiting) is that job; another under its id is a conflict.
    let mut again = job.clone();
    again.as_object_mut().unwrap().remove("wait");
    assert_eq!(
        c.result("submitJobJson", json!({"job": again})).await["jobId"],
        json!(id)
    );
    again["cmd"] = json!(["true"]);
    let a = c.call("submitJobJson", json!({"job": again})).await;
    assert_eq!(
        (a.status, &a.body["error"]["data"]["code"]),
        (409, &json!("ID_CONFLICT")),
        "{:?}",
        a.body
    );
    let def = c.get(&format!("/v1/job/definition/{id}")).await.body["result"].clone();
    assert_eq!((&def["id"], &def["cmd"][0]), (&json!(id), &json!("sh")));
    let stats = c.get(&format!("/v1/job/stats/{id}")).await.body["result"].clone();
    assert!(
        stats["finished"].is_string() && stats["attempts"][0]["exitCode"] == 0,
        "{stats}"
    );

    // testCorrect404HttpStatusCodeForMissingJobInJobCommands.
    for cmd in ["status", "result", "stats", "definition", "time"] {
        let a = c.get(&format!("/v1/job/{cmd}/fakejob")).await;
        assert_eq!(a.status, 404, "{cmd}: {:?}", a.body);
        assert_eq!(a.body["error"]["code"], 404);
        assert_eq!(a.body["error"]["message"], "No entry found for that jobId");
    }
    // testCorrect200HttpStatusCodeForMissingJobInSomeJobCommands.
    for cmd in ["remove", "kill"] {
        let a = c.get(&format!("/v1/job/{cmd}/fakejob")).await;
        assert_eq!((a.status, &a.body["result"]), (200, &json!(false)), "{cmd}");
    }
}

/// TestJobs, the multipart cases (`dockercloudcompute.run`, a `jsonrpc` part first).
#[tokio::test]
async fn test_jobs_multipart() {
    use reqwest::multipart::{Form, Part};
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let c = Client::of(&dcc);
    let call = |params: Value| {
        json!({"jsonrpc": "2.0", "id": "m1", "method": "dockercloudcompute.run", "params": params}).to_string()
    };
    let (bin1, bin2): (Vec<u8>, Vec<u8>) = ((0..=255).collect(), vec![0, 159, 146, 150, 255]);
    let form = |params: Value| {
        Form::new()
            .text("jsonrpc", call(params))
            .part(
                "script.sh",
                Part::bytes(b"cp /inputs/bin1 /outputs/bin1\ncp /inputs/bin2 /outputs/bin2\n".to_vec()),
            )
            .part("bin1", Part::bytes(bin1.clone()).file_name("bin1"))
            .part("bin2", Part::bytes(bin2.clone()).file_name("bin2"))
    };
    let script = json!({"image": IMAGE, "cmd": ["sh", "/inputs/script.sh"]});

    // testMultipartRPCSubmission: `wait` in the params, the result read later by its id.
    let mut p = script.clone();
    p["wait"] = json!(true);
    let a = c.api.post_multipart("/api/rpc", form(p.clone())).await;
    assert_eq!((a.status, &a.body["id"]), (200, &json!("m1")), "{:?}", a.body);
    let id = a.body["result"]["jobId"].as_str().unwrap().to_string();
    let r = c.result("job-wait", json!([id])).await;
    let base = r["outputsBaseUrl"].as_str().unwrap();
    assert_eq!(c.fetch(&format!("{base}bin1")).await.1, bin1);
    assert_eq!(c.fetch(&format!("{base}bin2")).await.1, bin2);

    // testMultipartRPCSubmissionAndWait: the answer is the result.
    let a = c.api.post_multipart("/v1", form(p.clone())).await;
    assert_eq!(a.status, 200);
    let mut outs: Vec<String> = serde_json::from_value(a.body["result"]["outputs"].clone()).unwrap();
    outs.sort();
    assert_eq!(outs, ["bin1", "bin2"]);

    // testMultipartRPCSubmissionJsonRpcNotFirst404.
    let f = Form::new().text("first", "x").text("jsonrpc", call(p.clone()));
    let a = c.api.post_multipart("/v1", f).await;
    assert_eq!(a.status, 404, "{:?}", a.body);
    assert!(a.body["error"]["message"].as_str().unwrap().contains("FIRST"));

    // testMultipartRPCSubmissionAndWaitNonZeroExitCode: appendStdOut/Err put the logs inline.
    let q = json!({"image": IMAGE, "cmd": ["sh", "-c", "echo out1; echo out2; echo err1 >&2; exit 3"],
                   "wait": true, "appendStdOut": true, "appendStdErr": true});
    let a = c.api.post_multipart("/v1", Form::new().text("jsonrpc", call(q))).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let r = &a.body["result"];
    assert_eq!(
        (&r["exitCode"], &r["stdout"], &r["stderr"]),
        (&json!(3), &json!(["out1", "out2"]), &json!(["err1"]))
    );

    // testMultipartRPCSubmissionBadDockerImage: a 400 that still carries the result.
    let q = json!({"image": "this_docker_image_is_fubar", "cmd": ["true"], "wait": true});
    let a = c.api.post_multipart("/v1", Form::new().text("jsonrpc", call(q))).await;
    assert_eq!(a.status, 400, "{:?}", a.body);
    assert_eq!(a.body["result"]["error"]["message"], "Docker_Image_Unknown");
    assert_eq!(a.body["result"]["status"], "failed");

    // testMultipartRPCSubmissionCustomId: the id is echoed; an extra field is just another input.
    let id = dcc_e2e::random_name("mp-id");
    let mut q = script.clone();
    q["id"] = json!(id);
    let f = form(q).text("extra", "tolerated");
    let a = c.api.post_multipart("/v1", f).await;
    assert_eq!(
        (a.status, &a.body["result"]["jobId"]),
        (200, &json!(id)),
        "{:?}",
        a.body
    );

    // `submitjob` (positional) and `submitJobJson` calls may lead a multipart body too.
    let positional = json!({"jsonrpc": "2.0", "id": 2, "method": "submitjob",
        "params": [IMAGE, null, ["sh", "/inputs/script.sh"], [], null, null, null, null, null, null, null, null, true]});
    let f = Form::new()
        .text("jsonrpc", positional.to_string())
        .part("script.sh", Part::bytes(b"cat /inputs/x".to_vec()))
        .text("x", "positional");
    let a = c.api.post_multipart("/v1", f).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(
        c.fetch_text(a.body["result"]["stdout"].as_str().unwrap()).await,
        "positional"
    );
    let named = json!({"jsonrpc": "2.0", "method": "submitJobJson", "params": {"job": {"image": IMAGE, "cmd": ["cat", "/inputs/x"], "wait": true}}});
    let a = c
        .api
        .post_multipart("/v1", Form::new().text("jsonrpc", named.to_string()).text("x", "named"))
        .await;
    assert_eq!(
        c.fetch_text(a.body["result"]["stdout"].as_str().unwrap()).await,
        "named"
    );

    // Another method, or a bad job: clear errors, nothing queued.
    let bad = json!({"jsonrpc": "2.0", "method": "status", "params": {}}).to_string();
    let a = c.api.post_multipart("/v1", Form::new().text("jsonrpc", bad)).await;
    assert_eq!((a.status, &a.body["error"]["code"]), (404, &json!(-32601)));
    let a = c
        .api
        .post_multipart("/v1", Form::new().text("jsonrpc", call(json!({"cmd": "ls"}))))
        .await;
    assert_eq!((a.status, &a.body["error"]["code"]), (400, &json!(-32602)));
    let a = c
        .api
        .post_multipart("/v1", form(json!({"image": IMAGE, "cmd": ["true"]})).text("../x", "y"))
        .await;
    assert_eq!(a.status, 400, "a path-like input name: {:?}", a.body);
}

/// TestTurboJobs, and TestJobCleanup's turbo case.
#[tokio::test]
async fn test_turbo_jobs() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let c = Client::of(&dcc);
    let command = json!([
        "sh",
        "-c",
        "echo -n out1 > /outputs/o1; cat /inputs/in.txt > /outputs/o2; printf 'x\\ny' > /outputs/o3; echo hello; echo oops >&2"
    ]);

    // testTurboJobComplete: V1, inputs and outputs as {name: text}.
    let job = json!({"image": IMAGE, "command": command, "inputs": {"in.txt": "input text"}});
    let r = c.result("runturbojson", json!({"job": job})).await;
    assert_eq!(
        r["outputs"],
        json!({"o1": "out1", "o2": "input text", "o3": "x\ny"}),
        "{r}"
    );
    assert_eq!(
        (&r["stdout"][0], &r["stderr"][0], &r["exitCode"]),
        (&json!("hello"), &json!("oops"), &json!(0))
    );

    // testTurboJobV2Complete: DataBlob inputs, base64 outputs.
    let job = json!({"image": IMAGE, "command": command,
                     "inputs": [{"name": "in.txt", "value": STANDARD.encode("b64 input"), "encoding": "base64"}]});
    let r = c.result("runturbojsonv2", json!({"job": job})).await;
    let mut got: Vec<(String, String)> = r["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            assert_eq!(o["encoding"], "base64");
            let bytes = STANDARD.decode(o["value"].as_str().unwrap()).unwrap();
            (o["name"].as_str().unwrap().into(), String::from_utf8(bytes).unwrap())
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("o1".into(), "out1".into()),
            ("o2".into(), "b64 input".into()),
            ("o3".into(), "x\ny".into())
        ]
    );
    assert_eq!((&r["stdout"], &r["stderr"]), (&json!(["hello"]), &json!(["oops"])));
    let mut utf8 = job.clone();
    utf8["forceUtf8Outputs"] = json!(true);
    let r = c.result("runturbojsonv2", json!({"job": utf8})).await;
    assert!(
        r["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["value"] == "out1" && o["encoding"] == "utf8"),
        "{r}"
    );

    // testTurboJobInAndOutOfRedis + testTurboJobSuccessCleanedUpFromRedis: visible while it runs,
    // no trace once answered.
    let id = dcc_e2e::random_name("turbo");
    let job = json!({"id": id, "image": IMAGE, "command": ["sh", "-c", "sleep 2; echo done"]});
    let c2 = c.clone();
    let running = tokio::spawn(async move { c2.result("runturbojsonv2", json!([job])).await });
    eventually(Duration::from_secs(30), "the turbo job to be working", || async {
        (c.get(&format!("/v1/job/status/{id}")).await.body["result"] == "working").then_some(())
    })
    .await;
    let r = running.await.unwrap();
    assert_eq!((&r["id"], &r["stdout"]), (&json!(id), &json!(["done"])));
    assert_eq!(c.get(&format!("/v1/job/status/{id}")).await.status, 404);
    assert_no_redis_trace(&redis, &id).await;

    // A missing image is answered (2018 never answered it), with 2018's error.
    let r = c
        .result(
            "runturbojsonv2",
            json!({"job": {"image": "this_docker_image_is_fubar", "command": ["true"]}}),
        )
        .await;
    assert_eq!(r["error"]["message"], "Docker_Image_Unknown", "{r}");

    // A turbo job takes only its own fields, and refuses mount points DCC does not use.
    let a = c
        .call(
            "runturbojsonv2",
            json!({"job": {"command": ["true"], "outputsPath": "/out"}}),
        )
        .await;
    assert_eq!(
        (a.status, &a.body["error"]["code"]),
        (400, &json!(-32602)),
        "{:?}",
        a.body
    );
}

/// TestFailureConditions (testJobFailedButStillRunsRestartsPrevJobCleanedUp is
/// `a_job_whose_worker_dies_runs_again` below).
#[tokio::test]
async fn test_failure_conditions() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let c = Client::of(&dcc);

    // testTimeoutJob: maxDuration is in seconds (2018's fallback multiplied it by 1000 again).
    let job = json!({"image": IMAGE, "cmd": ["sleep", "10"], "parameters": {"maxDuration": 1}});
    let id = c.result("submitJobJson", json!({"job": job})).await["jobId"]
        .as_str()
        .unwrap()
        .to_string();
    let r = c.get(&format!("/v1/job-wait/{id}")).await.body["result"].clone();
    // A 10 s command stopped: `timeout`, not `success` (1 read as ms x 1000 would let it end).
    assert_eq!(r["status"], "timeout", "{r}");
    assert_eq!(c.get(&format!("/v1/job/status/{id}")).await.body["result"], "finished");
    let (s, body) = c.fetch(r["resultJson"].as_str().unwrap()).await;
    assert_eq!(s, 200);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["status"], "timeout");

    // testJobCancelled: `kill` stops it and keeps it (2018 deleted it, so `killed` could not be
    // seen); `remove` then deletes it, and its result is gone.
    let job = json!({"image": IMAGE, "cmd": ["sleep", "60"]});
    let id = c.result("submitJobJson", json!({"job": job})).await["jobId"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(Duration::from_secs(30), "the job to be working", || async {
        (c.get(&format!("/v1/job/status/{id}")).await.body["result"] == "working").then_some(())
    })
    .await;
    assert_eq!(c.get(&format!("/v1/job/kill/{id}")).await.body["result"], true);
    let r = c.result("job-wait", json!({"jobId": id, "timeout": 20000})).await;
    assert_eq!(r["status"], "killed");
    let url = r["resultJson"].as_str().unwrap().to_string();
    assert_eq!(c.fetch(&url).await.0, 200);
    assert_eq!(c.get(&format!("/v1/job/remove/{id}")).await.body["result"], true);
    assert_eq!(c.get(&format!("/v1/job/result/{id}")).await.status, 404);
    assert_eq!(c.fetch(&url).await.0, 404);
    eventually(
        Duration::from_secs(10),
        "the killed job's container to be removed",
        || async { dcc_e2e::containers_of_job(&id).is_empty().then_some(()) },
    )
    .await;

    // job-wait past its timeout: 2018's "Job Timeout", as a 504.
    let id = c
        .result(
            "submitJobJson",
            json!({"job": {"image": IMAGE, "cmd": ["sleep", "30"]}}),
        )
        .await["jobId"]
        .as_str()
        .unwrap()
        .to_string();
    let a = c.call("job-wait", json!([id, 1500])).await;
    assert_eq!(
        (a.status, &a.body["error"]["message"]),
        (504, &json!("Job Timeout")),
        "{:?}",
        a.body
    );
    assert_eq!(a.body["error"]["data"]["jobId"], json!(id));
}

/// testJobFailedButStillRunsRestartsPrevJobCleanedUp, in DCC's failure model: the worker running
/// the job dies; the job runs again elsewhere and its result is the second attempt's. (A container
/// killed under a live worker is a failed run with exit code 137 in DCC: it cannot tell that from
/// the command's own SIGKILL, which 2018 re-ran forever.)
#[tokio::test]
async fn a_job_whose_worker_dies_runs_again() {
    let redis = Redis::start();
    let server = Dcc::builder(Role::ApiOnly, &redis)
        .env("DCC_LEASE_SECS", 3)
        .env("DCC_HEARTBEAT_SECS", 1)
        .start()
        .await;
    let worker = |r: &Redis| {
        Dcc::builder(Role::Worker, r)
            .storage(&server.storage)
            .env("DCC_LEASE_SECS", 3)
            .env("DCC_HEARTBEAT_SECS", 1)
            .env("DCC_CPUS", 1)
    };
    let mut w1 = worker(&redis).start().await;
    let c = Client::of(&server);
    let job = json!({"image": IMAGE, "cmd": ["sh", "-c", "sleep 2; echo attempt done"]});
    let id = c.result("submitJobJson", json!({"job": job})).await["jobId"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(Duration::from_secs(30), "the first attempt's container", || async {
        (!dcc_e2e::containers_labelled(&[("dcc.job", &id), ("dcc.attempt", "1")], false).is_empty()).then_some(())
    })
    .await;
    let w2 = worker(&redis).start().await;
    w1.kill();
    let r = c.result("job-wait", json!([id, 60000])).await;
    assert_eq!((&r["status"], &r["exitCode"]), (&json!("success"), &json!(0)), "{r}");
    assert_eq!(c.fetch_text(r["stdout"].as_str().unwrap()).await, "attempt done\n");
    let attempt = &r["stats"]["attempts"][0];
    assert_eq!(
        (&attempt["attempt"], &attempt["workerId"]),
        (&json!(2), &json!(w2.worker_id)),
        "{r}"
    );
    assert_eq!(c.get(&format!("/v1/job/status/{id}")).await.body["result"], "finished");
}

/// TestGpuJobs (testGPUandCPUjobsToCorrectWorkers) with faked GPUs, and testLastJobTimes.
#[tokio::test]
async fn test_gpu_jobs() {
    let devices = dcc_e2e::fake_gpu_devices(1);
    let redis = Redis::start();
    let server = Dcc::builder(Role::Server, &redis)
        .env("DCC_GPUS", 0)
        .env("DCC_CPUS", 2)
        .start()
        .await;
    let gpu = Dcc::builder(Role::Worker, &redis)
        .storage(&server.storage)
        .env("DCC_CPUS", 2)
        .env("DCC_GPUS", 1)
        .env("DCC_GPU_MODE", "devices")
        .env("DCC_GPU_DEVICE_DIR", devices.path().display())
        .env("DCC_GPU_DRIVER_BINDS", "")
        .env("DCC_GPU_LD_LIBRARY_PATH", "")
        .start()
        .await;
    let c = Client::of(&server);
    let runs: Vec<_> = (0..8)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                c.result("submitJobJson", json!({"job": test_job(1, (i % 2) as u32)}))
                    .await
            })
        })
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        let r = run.await.unwrap();
        check_test_job(&c, &r).await;
        let id = r["jobId"].as_str().unwrap();
        let view = c.result("job-stats", json!({"jobId": id, "raw": true})).await;
        assert_eq!(view["attempt"], 1, "{view}");
        if i % 2 == 1 {
            assert_eq!(
                (&view["queue"], &view["workerId"]),
                (&json!("gpu"), &json!(gpu.worker_id)),
                "{view}"
            );
        } else {
            assert_eq!(view["queue"], "cpu");
        }
        // testLastJobTimes: the finish time is recorded per job (DCC's scaler reads worker
        // idleness, not a per-queue key).
        assert!(r["stats"]["finished"].is_string(), "{r}");
    }
    let status = c.result("status", json!([])).await;
    assert_eq!(status["workers"].as_array().unwrap().len(), 2, "{status}");
}

/// TestJobCleanup (the turbo case is in `test_turbo_jobs`).
#[tokio::test]
async fn test_job_cleanup() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let c = Client::of(&dcc);

    // testBasicJobSuccessCleanedUpFromRedisAndStorage.
    let r = c.result("submitJobJson", json!({"job": test_job(0, 0)})).await;
    check_test_job(&c, &r).await;
    let id = r["jobId"].as_str().unwrap().to_string();
    assert!(
        redis.all_keys().await.iter().any(|k| k.contains(&id)),
        "the job is in Redis"
    );
    let prefix = format!("jobs/{id}/");
    assert!(
        !dcc.storage.objects(&prefix).await.is_empty(),
        "its files are in storage"
    );
    assert_eq!(c.result("job", json!(["remove", id])).await, true);
    assert_no_redis_trace(&redis, &id).await;
    assert!(dcc.storage.objects(&prefix).await.is_empty(), "files left in storage");
    assert_eq!(c.get(&format!("/v1/job/status/{id}")).await.status, 404);

    // testRemovingNonexistantJobNoError.
    assert_eq!(
        c.result("job", json!({"command": "remove", "jobId": "fakeJobId"}))
            .await,
        false
    );

    // deleteAllJobs (and the listing methods) on the whole queue.
    let ids: Vec<String> = futures_util::future::join_all((0..3).map(|_| async {
        let job = json!({"image": IMAGE, "cmd": ["sleep", "60"], "parameters": {"cpus": 8}});
        c.result("submitJobJson", json!({"job": job})).await["jobId"]
            .as_str()
            .unwrap()
            .to_string()
    }))
    .await;
    let pending = c.result("pending", json!([])).await;
    assert!(
        ids.iter().all(|i| pending.as_array().unwrap().contains(&json!(i))),
        "{pending}"
    );
    assert!(c.result("jobs", json!([])).await.as_array().unwrap().len() >= 3);
    let d = c.result("deleteAllJobs", json!([])).await;
    assert_eq!(d["total"], 3, "{d}");
    assert_eq!(c.result("pending", json!([])).await, json!([]));
}

/// The README's `curl` command verbatim, the protocol's edges, and the WebSocket's errors.
#[tokio::test]
async fn the_readme_example_and_the_protocol() {
    dcc_e2e::ensure_image();
    // The README runs busybox:latest; no registry is reachable here, so the test image stands in.
    let tagged = std::process::Command::new("docker")
        .args(["tag", IMAGE, "busybox:latest"])
        .status()
        .unwrap();
    assert!(tagged.success());
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let c = Client::of(&dcc);
    let readme = r#"{"method":"submitJobJson","params":{"job":{"wait":true,"image":"busybox:latest","command":["ls","/inputs"],"inputs":[{"name":"inputFile1","value":"foo"},{"name":"inputFile2","value":"bar"}],"parameters":{"maxDuration":600000,"cpus":1}}}}"#;
    let out = std::process::Command::new("curl")
        .args(["-s", "-X", "POST", "-H", "Content-Type: application/json", "-d", readme])
        .arg(format!("http://127.0.0.1:{}/v1", dcc.port))
        .output()
        .unwrap();
    let body: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
    let r = &body["result"];
    assert_eq!((&r["status"], &r["exitCode"]), (&json!("success"), &json!(0)), "{body}");
    // The README's `command` runs (2018 read only `cmd` here and ran the image's default).
    assert_eq!(
        c.fetch_text(r["stdout"].as_str().unwrap()).await,
        "inputFile1\ninputFile2\n"
    );
    let id = r["jobId"].as_str().unwrap();
    let out = std::process::Command::new("curl")
        .arg(format!("http://127.0.0.1:{}/v1/job/status/{id}", dcc.port))
        .output()
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["result"],
        "finished"
    );

    // Method names, the list, the other routes.
    let list = c.get("/v1").await.body;
    assert!(
        list["methods"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["alias"] == "submitJobJson")
    );
    let q = c
        .result("ccc.compute.server.execution.routes.RpcRoutes.getQueues", json!([]))
        .await;
    assert_eq!(q["cpu"]["waiting"], 0, "{q}");
    assert_eq!(c.get("/v1/queues").await.body["result"]["gpu"]["active"], 0);
    assert_eq!(
        c.get("/api/rpc/status").await.body["result"]["workers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let a = c.api.post("/v1/job", &json!({"command": "status", "jobId": id})).await;
    assert_eq!(a.body["result"], "finished");
    let a = c
        .call_at("/api/rpc", "job", json!({"command": "definition", "jobId": id}))
        .await;
    assert_eq!(a.body["result"]["command"], json!(["ls", "/inputs"]), "{:?}", a.body);

    // Bad calls get clear JSON-RPC errors with their HTTP status; nothing is a 500.
    let err = |a: &Answer| (a.status, a.body["error"]["code"].as_i64().unwrap_or(0));
    assert_eq!(err(&c.call("noSuchMethod", json!([])).await), (404, -32601));
    let a = c.call("log", json!([])).await;
    assert!(
        a.body["error"]["message"].as_str().unwrap().contains("RUST_LOG"),
        "{:?}",
        a.body
    );
    assert_eq!(
        err(&c.api.post_raw("/v1", Vec::new(), "application/json").await),
        (400, -32700)
    );
    assert_eq!(
        err(&c.api.post_raw("/v1", b"{nope".to_vec(), "application/json").await),
        (400, -32700)
    );
    assert_eq!(
        err(&c.api.post_raw("/v1", b"[]".to_vec(), "application/json").await),
        (400, -32600)
    );
    assert_eq!(c.api.post_raw("/v1", b"{}".to_vec(), "text/plain").await.status, 415);
    assert_eq!(err(&c.call("job", json!(["status"])).await), (400, -32602));
    assert_eq!(err(&c.call("job", json!(["explode", id])).await), (400, -32602));
    assert_eq!(
        err(&c.call("job", json!({"command": "status", "jobId": id, "x": 1})).await),
        (400, -32602)
    );
    assert_eq!(
        err(&c
            .call("submitJobJson", json!({"job": {"cmd": ["true"], "bogus": 1}}))
            .await),
        (400, -32602)
    );
    let a = c
        .call("submitJobJson", json!({"job": {"id": "../x", "cmd": ["true"]}}))
        .await;
    assert_eq!(
        (a.status, &a.body["error"]["data"]["code"]),
        (400, &json!("INVALID_JOB")),
        "{:?}",
        a.body
    );
    let a = c.call("submitJobJson", json!({"job": {"cmd": ["true"], "inputs": [{"name": "x", "value": "http://169.254.169.254/latest/meta-data/", "source": "url"}]}})).await;
    assert_eq!(a.status, 400, "an internal URL input: {:?}", a.body);
    assert_eq!(err(&c.call("job-wait", json!([id, -5])).await), (400, -32602));

    // The WebSocket: an ended job answers at once; errors in 2018's shape; unknown jobs answered.
    assert_eq!(c.notified(id).await["result"]["jobId"], json!(id));
    let mut ws = c.ws("").await;
    for (msg, words) in [
        ("not json", "Error parsing JSON-RPC"),
        (r#"{"method":"other"}"#, "Unknown method"),
        (r#"{"method":"batchcompute.jobnotify"}"#, "Missing params"),
        (
            r#"{"method":"batchcompute.jobnotify","params":{}}"#,
            "Missing jobId parameter",
        ),
        (
            r#"{"method":"batchcompute.jobnotify","params":{"jobId":"fakejob"}}"#,
            "No entry found for that jobId",
        ),
    ] {
        ws.send(Message::Text(msg.into())).await.unwrap();
        assert_eq!(ws_next(&mut ws).await["error"], words, "{msg}");
    }
    // One connection follows at most 32 jobs at once; the 33rd is refused, the others answered.
    let long = c
        .result(
            "submitJobJson",
            json!({"job": {"image": IMAGE, "cmd": ["sleep", "60"]}}),
        )
        .await;
    let long = long["jobId"].as_str().unwrap().to_string();
    let ask = json!({"method": "batchcompute.jobnotify", "params": {"jobId": long}}).to_string();
    for _ in 0..33 {
        ws.send(Message::Text(ask.clone().into())).await.unwrap();
    }
    assert_eq!(
        ws_next(&mut ws).await["error"],
        "Too many jobs followed on one connection"
    );
    assert_eq!(c.get(&format!("/v1/job/kill/{long}")).await.body["result"], true);
    for _ in 0..32 {
        assert_eq!(ws_next(&mut ws).await["result"]["status"], "killed");
    }
    // The dashboard is still served on `/`.
    let (s, page) = c.api.get_bytes("/").await;
    assert!(s == 200 && String::from_utf8_lossy(&page).contains("<html"), "{s}");
}

/// Keys, roles and tenants hold through the adapter as through v1.
#[tokio::test]
async fn keys_and_tenants_hold_through_the_adapter() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_API_KEYS", "root")
        .keys(&[
            ("team-a", "submit", "ka", None),
            ("team-a", "read", "ka-read", None),
            ("team-b", "submit", "kb", None),
        ])
        .start()
        .await;
    let anon = Client::of(&dcc);
    let (a, b, reader, root) = (
        anon.with_key("ka"),
        anon.with_key("kb"),
        anon.with_key("ka-read"),
        anon.with_key("root"),
    );

    assert_eq!(anon.call("status", json!([])).await.status, 401);
    // 2018's probes answer load balancers without a key; the version needs one.
    for probe in ["/healthcheck", "/ready"] {
        assert_eq!(anon.api.get_bytes(probe).await, (200, Vec::new()), "{probe}");
    }
    assert_eq!(anon.api.get_bytes("/checks").await, (200, b"OK".to_vec()));
    assert_eq!(anon.api.get_bytes("/version").await.0, 401);
    let (s, v) = root.api.get_bytes("/version").await;
    assert!(
        s == 200 && !v.is_empty() && v.iter().all(|b| b.is_ascii_digit() || *b == b'.'),
        "{s} {v:?}"
    );
    assert_eq!(anon.get("/v1/queues").await.status, 401);
    let r = a
        .result(
            "submitJobJson",
            json!({"job": {"image": IMAGE, "cmd": ["sleep", "30"]}}),
        )
        .await;
    let id = r["jobId"].as_str().unwrap().to_string();

    // Another tenant cannot see, kill, remove or follow it; its listings do not show it.
    assert_eq!(b.get(&format!("/v1/job/status/{id}")).await.status, 404);
    assert_eq!(b.get(&format!("/v1/job/kill/{id}")).await.body["result"], false);
    assert_eq!(b.get(&format!("/v1/job/remove/{id}")).await.body["result"], false);
    assert!(
        !b.result("jobs", json!([]))
            .await
            .as_array()
            .unwrap()
            .contains(&json!(id))
    );
    assert_eq!(b.notified(&id).await["code"], 404);
    let st = a.get(&format!("/v1/job/status/{id}")).await.body["result"].clone();
    assert!(st == "pending" || st == "working", "{st}");
    assert!(
        a.result("jobs", json!([]))
            .await
            .as_array()
            .unwrap()
            .contains(&json!(id))
    );

    // A read-only key reads its tenant's jobs and may not submit or kill.
    assert!(reader.get(&format!("/v1/job/status/{id}")).await.status == 200);
    let s = reader
        .call("submitJobJson", json!({"job": {"image": IMAGE, "cmd": ["true"]}}))
        .await;
    assert_eq!((s.status, &s.body["error"]["code"]), (403, &json!(403)), "{:?}", s.body);
    assert_eq!(reader.get(&format!("/v1/job/kill/{id}")).await.status, 403);

    // Fleet-wide deletes are the admin's.
    assert_eq!(a.call("deleteAllJobs", json!([])).await.status, 403);
    assert_eq!(
        a.get(&format!("/v1/job/status/{id}")).await.status,
        200,
        "the job survived"
    );

    // The 2018 WebSocket on `/` needs a key too (a header, or `?access_token=`).
    let refused = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/", dcc.port)).await;
    assert!(refused.is_err(), "a socket without a key was accepted");
    let mut ws = a.ws("?access_token=ka").await;
    ws.send(Message::Text(
        json!({"method": "batchcompute.jobnotify", "params": {"jobId": id}})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    assert_eq!(a.get(&format!("/v1/job/kill/{id}")).await.body["result"], true);
    let pushed = ws_next(&mut ws).await;
    assert_eq!(
        (&pushed["result"]["jobId"], &pushed["result"]["status"]),
        (&json!(id), &json!("killed")),
        "{pushed}"
    );
    let d = root.result("deleteAllJobs", json!([])).await;
    assert_eq!(d["total"], 0, "{d}");
}

/// Odd values for any argument or job field: what a careless or hostile client sends.
fn odd_value(rng: &mut impl rand::Rng) -> Value {
    let pool = [
        json!(null),
        json!(true),
        json!(-1),
        json!(0),
        json!(1e308),
        json!(18446744073709551615u64),
        json!(""),
        json!("x".repeat(5000)),
        json!("../../etc/passwd"),
        json!("nul\u{0}byte"),
        json!("ünïcödé ✓"),
        json!([]),
        json!({}),
        json!([[[[[[[]]]]]]]),
        json!({"a": {"b": {"c": [1, "2", null]}}}),
        json!(IMAGE),
        json!(["true"]),
        json!(["sleep", "1"]),
        json!([{"name": "a", "value": "b"}]),
        json!([{"name": "a", "value": "zz", "encoding": "hex"}]),
        json!([{"name": "a", "value": "file:///etc/passwd", "source": "url"}]),
        json!({"maxDuration": 1, "gpu": 1}),
        json!({"maxDuration": "forever"}),
    ];
    pool[rng.random_range(0..pool.len())].clone()
}

/// Random calls of every method, with odd params and odd jobs, by JSON-RPC, GET and POST
/// routes: never a 5xx other than 503/504, always the envelope, and the server keeps answering.
#[tokio::test]
async fn random_calls_never_break_the_adapter() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("DCC_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (DCC_FUZZ_SEED reruns it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_MAX_WAIT_SECS", 5)
        .start()
        .await;
    let c = Client::of(&dcc);
    let methods: Vec<String> = c.get("/v1").await.body["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["alias"].as_str().unwrap().to_string())
        .chain(
            [
                "deleteAllJobs",
                "nope",
                "log",
                "ccc.compute.server.execution.routes.RpcRoutes.jobs",
            ]
            .map(String::from),
        )
        .collect();
    let fields = [
        "id",
        "image",
        "cmd",
        "command",
        "inputs",
        "parameters",
        "wait",
        "meta",
        "createOptions",
        "appendStdOut",
        "priority",
        "workingDir",
        "turbo",
    ];
    let mut seen = std::collections::BTreeMap::<(u16, String), u32>::new();
    let mut ids: Vec<Value> = vec![json!("fakejob")];
    for i in 0..300 {
        let method = methods[rng.random_range(0..methods.len())].clone();
        // A valid job with up to two fields made odd: most calls get past the envelope.
        let mut job = json!({"image": IMAGE, "cmd": ["true"], "parameters": {"maxDuration": 2}});
        for _ in 0..rng.random_range(0..3) {
            job[fields[rng.random_range(0..fields.len())]] = odd_value(&mut rng);
        }
        if job["wait"] == true {
            // A job that waits runs something short: the fuzz is about the adapter.
            job["parameters"] = json!({"maxDuration": 2});
        }
        let id = ids[rng.random_range(0..ids.len())].clone();
        let odd = odd_value(&mut rng);
        let command = [
            "status",
            "result",
            "exitcode",
            "definition",
            "stats",
            "time",
            "kill",
            "remove",
            "boom",
        ];
        let params = match (method.as_str(), rng.random_range(0..5)) {
            (_, 0) => odd,
            ("submitjob" | "runturbo", _) => json!([IMAGE, null, ["true"], odd]),
            ("job", _) => json!({"command": command[rng.random_range(0..command.len())], "jobId": id}),
            ("job-wait", _) => json!({"jobId": id, "timeout": 500}),
            ("job-stats", _) => json!([id, odd]),
            ("submitJobJson" | "runturbojson" | "runturbojsonv2", _) => json!({"job": job}),
            _ => json!({}),
        };
        let a = match i % 3 {
            0 => c.call(&method, params.clone()).await,
            1 => c.api.post(&format!("/v1/{method}"), &params).await,
            _ => {
                // Percent-encoded, after a letter: a segment may not climb out of /v1 (`..`).
                let seg = |v: Value| {
                    let text = v.as_str().map(String::from).unwrap_or_else(|| v.to_string());
                    let enc: String = text
                        .bytes()
                        .map(|b| {
                            if b.is_ascii_alphanumeric() {
                                (b as char).to_string()
                            } else {
                                format!("%{b:02X}")
                            }
                        })
                        .collect();
                    format!("x{enc}")
                };
                let path: String = (0..rng.random_range(0..3))
                    .map(|_| format!("/{}", seg(odd_value(&mut rng))))
                    .collect();
                c.get(&format!("/v1/{method}{path}")).await
            }
        };
        assert!(
            a.status < 500 || a.status == 503 || a.status == 504,
            "{method} {params}: {} {:?}",
            a.status,
            a.body
        );
        assert_eq!(a.body["jsonrpc"], "2.0", "{method} {params}: {:?}", a.body);
        assert!(
            a.body.get("result").is_some() != a.body.get("error").is_some(),
            "{:?}",
            a.body
        );
        if let Some(id) = a.body["result"]["jobId"].as_str() {
            ids.push(json!(id));
        }
        let kind = a.body["error"]["data"]["code"].as_str().map(String::from);
        *seen
            .entry((a.status, kind.unwrap_or_else(|| a.body["error"]["code"].to_string())))
            .or_default() += 1;
    }
    eprintln!("(status, error) counts: {seen:?}");
    assert!(
        c.result("queues", json!([])).await["cpu"]["active"].is_u64(),
        "the server still answers"
    );
    assert!(!dcc.log().contains("panicked"), "the server panicked:\n{}", dcc.log());
}

/// A turbo call with a standard job's id and definition neither answers that job's result nor
/// deletes it (turbo calls delete what they ran); a v1 refusal's `Retry-After` reaches the 2018
/// client with its 429.
#[tokio::test]
async fn a_turbo_call_cannot_take_a_standard_job_and_429_keeps_retry_after() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_API_KEYS", "root")
        .keys(&[("slow", "submit", "ks", Some((0.01, 1)))])
        .start()
        .await;
    let root = Client::of(&dcc).with_key("root");
    // With maxDuration given, both forms map onto the same v1 definition.
    let job = json!({"id": "same-1", "image": IMAGE, "command": ["sh", "-c", "sleep 1; echo standard"],
                     "parameters": {"maxDuration": 600}});
    assert_eq!(root.result("submitJobJson", json!([job])).await["jobId"], "same-1");
    let turbo = root.call("runturbojson", json!([job])).await;
    assert_eq!(turbo.status, 409, "{:?}", turbo.body);
    assert_eq!(turbo.body["error"]["data"]["code"], "ID_CONFLICT", "{:?}", turbo.body);
    let view = root
        .api
        .wait_status("same-1", "succeeded", Duration::from_secs(30))
        .await;
    assert_eq!(view["jobId"], "same-1");
    assert_eq!(root.api.log("same-1", "stdout").await, "standard\n");
    // A turbo job of its own id is still answered and deleted as 2018 did.
    let own = json!({"id": "turbo-1", "image": IMAGE, "command": ["sh", "-c", "echo turbo"]});
    assert_eq!(
        root.result("runturbojson", json!([own])).await["stdout"],
        json!(["turbo"])
    );
    assert_eq!(root.api.get("/api/v1/jobs/turbo-1").await.status, 404);

    // Rate limited: the second submit is refused with the v1 answer's Retry-After.
    let slow = Client::of(&dcc).with_key("ks");
    let small = json!({"image": IMAGE, "command": ["true"]});
    slow.result("submitJobJson", json!([small])).await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "submitJobJson", "params": [small]});
    for path in ["/v1", "/v1/submitJobJson"] {
        let payload = if path == "/v1" {
            body.clone()
        } else {
            json!({"job": small})
        };
        let r = slow
            .api
            .http
            .post(format!("{}{path}", slow.api.base))
            .bearer_auth("ks")
            .json(&payload)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429, "{path}");
        let after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(after >= 1, "{path}: Retry-After {after}");
    }
}

/// A log of 16 MB of newlines becomes an answer of 16 million `""`: the adapter's memory for it
/// stays a small multiple of the log (it was 1.2 GB for this log), through `job result`,
/// `result.json` and the 2018 WebSocket (the same answer as `runturbojson`'s, whose logs come
/// whole in the v1 answer). The worker cannot produce such a log within a test's time (it takes
/// its container's output a line at a time: ~6 000 lines a second in a debug build), so the
/// test writes the finished job's stdout into the local storage as the worker would have.
#[tokio::test]
async fn a_log_of_empty_lines_does_not_blow_up_the_adapters_memory() {
    const LOG: usize = 16_000_000;
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let store = dcc_e2e::Store::Local(dir.path().join("data"));
    let dcc = Dcc::builder(Role::Server, &redis).storage(&store).start().await;
    let c = Client::of(&dcc);
    // Lines of `"stdout":["","",…]` counted in the raw answer: parsed, 16 million values would
    // weigh on this test's memory, not the server's.
    let lines_of = |body: &[u8]| -> usize {
        let text = std::str::from_utf8(body).unwrap();
        let start = text
            .find(r#""stdout":["#)
            .unwrap_or_else(|| panic!("{}", text.chars().take(300).collect::<String>()))
            + r#""stdout":["#.len();
        let inner = &text[start..start + text[start..].find(']').unwrap()];
        assert!(inner.bytes().all(|b| b == b'"' || b == b','), "only empty lines");
        if inner.is_empty() {
            0
        } else {
            inner.matches(',').count() + 1
        }
    };
    let call = |method: &'static str, params: Value| {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let (http, url) = (c.api.http.clone(), format!("{}/v1", c.api.base));
        async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap()
        }
    };
    let job = json!({"id": "lines-1", "image": IMAGE, "command": ["sh", "-c", "echo; echo"], "appendStdOut": true});
    c.result("submitJobJson", json!([job])).await;
    c.api.wait_status("lines-1", "succeeded", Duration::from_secs(60)).await;
    // Warm up: the first answer allocates what every call shares.
    assert_eq!(lines_of(&call("job", json!(["result", "lines-1"])).await), 2);
    let stdout = store
        .objects("jobs/lines-1/")
        .await
        .into_iter()
        .find(|o| o.ends_with("stdout"))
        .expect("the job's stdout is stored");
    std::fs::write(store.path().join("jobs/lines-1").join(&stdout), vec![b'\n'; LOG]).unwrap();
    // Each call's peak over the resident memory it started from.
    let mut peaks = Vec::new();
    let base = reset_peak_rss(&dcc);
    assert_eq!(lines_of(&call("job", json!(["result", "lines-1"])).await), LOG);
    peaks.push(("job result", dcc.peak_rss().saturating_sub(base)));

    let base = reset_peak_rss(&dcc);
    let (status, body) = c.api.get_bytes("/v1/results/lines-1/result.json").await;
    assert_eq!(status, 200);
    let body = format!(r#"{{"result":{}}}"#, String::from_utf8(body).unwrap());
    assert_eq!(lines_of(body.as_bytes()), LOG);
    peaks.push(("result.json", dcc.peak_rss().saturating_sub(base)));

    // 2018 clients (node's `ws`) took messages of up to 100 MiB; tungstenite's default is 64.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let url = format!("ws://127.0.0.1:{}/", dcc.port);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), false)
        .await
        .unwrap();
    let base = reset_peak_rss(&dcc);
    let ask = json!({"method": "batchcompute.jobnotify", "params": {"jobId": "lines-1"}});
    ws.send(Message::Text(ask.to_string().into())).await.unwrap();
    let notified = loop {
        match tokio::time::timeout(Duration::from_secs(60), futures_util::StreamExt::next(&mut ws)).await {
            Ok(Some(Ok(Message::Text(t)))) => break t,
            Ok(Some(Ok(_))) => continue,
            other => panic!("no notification: {other:?}"),
        }
    };
    assert_eq!(lines_of(notified.as_bytes()), LOG);
    peaks.push(("2018 WebSocket", dcc.peak_rss().saturating_sub(base)));

    // A log past the adapter's inline bound (16 MiB) is cut after a whole line, and says so:
    // what one call holds is bounded whatever the log.
    std::fs::write(store.path().join("jobs/lines-1").join(&stdout), vec![b'\n'; 40_000_000]).unwrap();
    let base = reset_peak_rss(&dcc);
    let body = String::from_utf8(call("job", json!(["result", "lines-1"])).await.to_vec()).unwrap();
    peaks.push(("job result of a 40 MB log", dcc.peak_rss().saturating_sub(base)));

    let mb = |b: u64| b / 1_000_000;
    eprintln!(
        "server peak RSS over each call's start, for a {} MB log:",
        mb(LOG as u64)
    );
    for (what, grew) in &peaks {
        eprintln!("  {what}: +{} MB", mb(*grew));
    }
    // The answer is 3 bytes a line (48 MB), written once into a buffer sized for it; the log is
    // held once besides; the WebSocket copies the message into its frame. Measured: about 4 and
    // 7 times the log; 1 100 MB (70 times) before the answer was written from the text.
    let note = format!(
        r#","[dcc: log cut at 16777216 bytes in this answer; the whole log: {}/api/v1/jobs/lines-1/stdout]"]"#,
        c.api.base
    );
    assert!(body.contains(&note), "{}", &body[body.len().saturating_sub(400)..]);
    assert_eq!(body.matches(r#""""#).count(), 16 << 20);
    for (what, grew) in peaks {
        assert!(
            grew < 10 * LOG as u64,
            "{what}: peak RSS grew {} MB for a {} MB log",
            mb(grew),
            mb(LOG as u64)
        );
    }
}

/// Resets the process's peak resident memory (`VmHWM`) to its current one, which it returns.
fn reset_peak_rss(dcc: &Dcc) -> u64 {
    std::fs::write(format!("/proc/{}/clear_refs", dcc.pid()), "5").expect("the peak RSS can be reset");
    dcc.peak_rss()
}

/// 2018's plain HTTP routes that tooling still calls: `/wait` and `/status` (the 2018 test runner
/// polls `/wait` before anything else; both without a key, as the probes), the job-running health
/// check `/monitor` (as the caller: its test job is the caller's, a key is needed) with
/// `/monitor/jobcount`, and a job's files at 2018's storage paths, scoped like every job read.
#[tokio::test]
async fn the_2018_plain_routes() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_API_KEYS", "root")
        .keys(&[("team-a", "submit", "ka", None), ("team-b", "submit", "kb", None)])
        .env("DCC_MONITOR_IMAGE", IMAGE)
        .start()
        .await;
    let anon = Client::of(&dcc);
    let (a, b) = (anon.with_key("ka"), anon.with_key("kb"));

    assert_eq!(anon.api.get_bytes("/wait").await, (200, Vec::new()));
    assert_eq!(anon.get("/status").await.body, json!({"status": "Ready"}));

    // The health check runs a test job as the caller, and says so.
    assert_eq!(anon.get("/monitor").await.status, 401);
    let m = a.get("/monitor?within=60&timeout=60").await;
    assert_eq!(m.status, 200, "{:?}", m.body);
    assert_eq!(
        (&m.body["success"], &m.body["reason"]),
        (&json!(true), &json!("AnotherJobFinishedRecently")),
        "{:?}",
        m.body
    );
    let probe = m.body["job"].as_str().unwrap().to_string();
    let view = a.api.get(&format!("/api/v1/jobs/{probe}")).await.body;
    assert_eq!(
        (&view["status"], &view["meta"]["keywords"]),
        (&json!("succeeded"), &json!("monitor"))
    );
    // A job of the caller's succeeded within the minute: no new test job.
    let m = a.get("/test").await;
    assert_eq!(
        m.body["reason"], "AnotherJobFinishedRecentlyWithoutWaiting",
        "{:?}",
        m.body
    );
    assert_eq!(m.body["job"], json!(probe));
    assert_eq!(a.get("/monitor/jobcount").await.body, json!({"count": 0}));
    // Another tenant's check does not count team-a's job.
    let m = b.get("/check?timeout=60").await;
    assert_eq!(m.body["reason"], "AnotherJobFinishedRecently", "{:?}", m.body);
    assert_ne!(m.body["job"], json!(probe));

    // A job's files where 2018 stored them, as v1 serves them, to its own tenant only.
    let r = a.result("submitJobJson", json!({"job": test_job(1, 0)})).await;
    let id = r["jobId"].as_str().unwrap();
    let at = |rest: &str| format!("/{id}/{rest}");
    let (s, result) = a.api.get_bytes(&at("result.json")).await;
    assert_eq!(s, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&result).unwrap(),
        a.get(&format!("/v1/results/{id}/result.json")).await.body
    );
    assert_eq!(
        a.api.get_bytes(&at("stdout")).await,
        (200, b"line1\nline2\nline3\nfoo\n".to_vec())
    );
    assert_eq!(a.api.get_bytes(&at("stderr")).await, (200, b"errline\n".to_vec()));
    assert_eq!(a.api.get_bytes(&at("outputs/o1")).await, (200, b"known".to_vec()));
    let refused = a.get(&at("inputs/in1")).await;
    assert_eq!((refused.status, refused.code()), (404, "NOT_FOUND"));
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("inputs are not served back"),
        "{:?}",
        refused.body
    );
    // A path of no 2018 shape is the usual 404.
    let other = a.get("/api/nothing/here").await;
    assert_eq!((other.status, other.code()), (404, "NOT_FOUND"), "{:?}", other.body);
    assert!(
        other.body["error"]["message"].as_str().unwrap().starts_with("no route"),
        "{:?}",
        other.body
    );
    for rest in ["result.json", "stdout", "outputs/o1"] {
        assert_eq!(b.api.get_bytes(&at(rest)).await.0, 404, "team-b read team-a's {rest}");
        assert_eq!(anon.api.get_bytes(&at(rest)).await.0, 401);
    }

    // No worker runs the test job: a failure after the timeout, in 2018's shape; the job stays
    // the one in flight (a second check waits on it rather than queueing another).
    let lone_redis = Redis::start();
    let lone_dcc = Dcc::builder(Role::ApiOnly, &lone_redis).start().await;
    let lone = Client::of(&lone_dcc);
    let m = lone.get("/monitor?timeout=1").await;
    assert_eq!((m.status, &m.body["success"]), (500, &json!(false)), "{:?}", m.body);
    assert_eq!(m.body["reason"], "FailedTimedOutNoActiveJobs", "{:?}", m.body);
    assert_eq!(lone.get("/monitor/jobcount").await.body, json!({"count": 1}));
    let again = lone.get("/monitor?timeout=1").await;
    assert_eq!(again.body["job"], m.body["job"], "{:?}", again.body);
}
