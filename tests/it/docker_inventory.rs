//! The Docker inventory against a real engine (started by the test; see tests/it/common/docker.rs):
//! healthy and unhealthy health checks, an exit code, a crash loop, a compose container removed
//! and re-created (its restart counter keeps counting, also across a restart of vigil), an OOM
//! kill, label selection, and the engine stopped and started again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::{Duration, Instant};

use common::docker::{Engine, IMAGE};
use vigil::app::App;
use vigil::inventory::docker::{Container, ContainerState, Health};

fn wait_for(app: &App, what: &str, ok: impl Fn(&[Container], bool) -> bool) -> Vec<Container> {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let containers: Vec<Container> = app.docker.containers().into_values().collect();
        if ok(&containers, app.docker.up()) {
            return containers;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: up={} {containers:#?}",
            app.docker.up()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn find<'a>(containers: &'a [Container], name: &str) -> Option<&'a Container> {
    containers.iter().find(|c| c.name == name)
}

fn text_config(dir: &tempfile::TempDir, engine: &Engine) -> String {
    format!(
        "state_dir: {}\ndocker: {{enabled: true, host: '{}', relist_interval: 2s}}\n",
        dir.path().join("state").display(),
        engine.host()
    )
}

fn metrics(app: &App) -> String {
    vigil::metrics::encode(&app.registry, false).unwrap()
}

#[test]
fn containers_from_a_real_engine() {
    let _turn = crate::common::exclusive();
    let mut engine = Engine::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(common::config(&text_config(&dir, &engine), dir.path()), None).unwrap();
    wait_for(&app, "the engine", |_, up| up);

    let run = |args: &[&str]| {
        let mut all = vec!["run", "-d", "--network", "none"];
        all.extend_from_slice(args);
        engine.docker(&all)
    };
    run(&[
        "--name",
        "healthy",
        "--health-cmd",
        "true",
        "--health-interval",
        "1s",
        IMAGE,
        "sleep",
        "300",
    ]);
    run(&[
        "--name",
        "sick",
        "--health-cmd",
        "false",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        IMAGE,
        "sleep",
        "300",
    ]);
    run(&["--name", "exits", IMAGE, "sh", "-c", "exit 3"]);
    run(&[
        "--name",
        "loop",
        "--restart",
        "on-failure",
        IMAGE,
        "sh",
        "-c",
        "sleep 0.2; exit 1",
    ]);
    run(&["--name", "oom", "--memory", "8m", IMAGE, "sh", "-c", "tail /dev/zero"]);

    let seen = wait_for(&app, "every case", |c, _| {
        find(c, "healthy").is_some_and(|c| c.health == Health::Healthy && c.state == ContainerState::Running)
            && find(c, "sick").is_some_and(|c| c.health == Health::Unhealthy)
            && find(c, "exits").is_some_and(|c| c.state == ContainerState::Exited && c.exit_code == 3)
            && find(c, "loop").is_some_and(|c| c.restart_count >= 2)
            && find(c, "oom").is_some_and(|c| c.oom_killed)
    });
    assert!(find(&seen, "healthy").unwrap().started_at.is_some());
    let text = metrics(&app);
    for line in [
        r#"vigil_container_health_status{container="healthy",project="",service="",status="healthy"} 1"#,
        r#"vigil_container_health_status{container="sick",project="",service="",status="unhealthy"} 1"#,
        r#"vigil_container_state{container="exits",project="",service="",state="exited"} 1"#,
        r#"vigil_container_last_exit_code{container="exits",project="",service=""} 3"#,
        r#"vigil_container_oom_killed{container="oom",project="",service=""} 1"#,
        "vigil_docker_up 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    // When the stopped container stopped (the rules count how long it has been down from it);
    // a container that never stopped has none.
    assert!(
        text.lines()
            .any(|l| l.starts_with(r#"vigil_container_finished_timestamp_seconds{container="exits""#)),
        "{text}"
    );
    assert!(
        !text.contains(r#"vigil_container_finished_timestamp_seconds{container="healthy""#),
        "{text}"
    );
    common::promtool_check_metrics(&text);

    // A compose container crash-loops, is removed and re-created: its counter keeps counting.
    let compose = [
        "--label",
        "com.docker.compose.project=shop",
        "--label",
        "com.docker.compose.service=api",
    ];
    let recreate = |restarts: &str| {
        let mut args = vec!["--name", "shop-api-1", "--restart", restarts];
        args.extend_from_slice(&compose);
        args.extend_from_slice(&[
            "--label",
            "com.docker.compose.container-number=1",
            IMAGE,
            "sh",
            "-c",
            "exit 1",
        ]);
        run(&args)
    };
    recreate("on-failure:2");
    wait_for(&app, "two restarts", |c, _| {
        find(c, "shop-api-1").is_some_and(|c| c.restart_count == 2 && c.state == ContainerState::Exited)
    });
    engine.docker(&["rm", "-f", "shop-api-1"]);
    wait_for(&app, "the removal", |c, _| find(c, "shop-api-1").is_none());
    recreate("on-failure:3");
    wait_for(&app, "three more", |c, _| {
        find(c, "shop-api-1").is_some_and(|c| c.restart_count == 3 && c.state == ContainerState::Exited)
    });
    let text = metrics(&app);
    let line = r#"vigil_container_restarts_total{container="shop-api-1",project="shop",service="api"} 5"#;
    assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");

    // vigil restarts: the total goes on from 5 (kept in state_dir), it is no counter reset.
    runtime.block_on(app.close());
    let app = App::start(common::config(&text_config(&dir, &engine), dir.path()), None).unwrap();
    let seen = wait_for(&app, "the containers after a restart of vigil", |c, _| {
        find(c, "shop-api-1").is_some()
    });
    assert!(find(&seen, "shop-api-1").is_some_and(|c| c.restart_count == 3));
    let text = metrics(&app);
    assert!(
        text.lines().any(|l| l == line),
        "after a restart, missing {line:?} in:\n{text}"
    );

    // The engine goes away and comes back: vigil_docker_up follows, the rest keeps working.
    engine.shutdown();
    wait_for(&app, "the engine to be seen down", |_, up| !up);
    assert!(metrics(&app).lines().any(|l| l == "vigil_docker_up 0"));
    assert!(
        metrics(&app).contains("vigil_config_last_reload_successful 1"),
        "the rest of /metrics still works"
    );
    engine.launch();
    wait_for(&app, "the engine to be seen up again", |c, up| {
        up && find(c, "healthy").is_some()
    });
    app.stop();
}

#[test]
fn select_label_limits_the_containers_watched() {
    let _turn = crate::common::exclusive();
    let engine = Engine::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    engine.docker(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "watched",
        "--label",
        "vigil.monitor=true",
        IMAGE,
        "sleep",
        "300",
    ]);
    engine.docker(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "ignored",
        IMAGE,
        "sleep",
        "300",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "docker: {{enabled: true, host: '{}', select_label: vigil.monitor=true}}\n",
            engine.host()
        ),
        dir.path(),
    );
    let app = App::start(config, None).unwrap();
    let seen = wait_for(&app, "the labelled container", |c, _| find(c, "watched").is_some());
    assert!(find(&seen, "ignored").is_none(), "{seen:#?}");
    app.stop();
}

#[test]
fn an_absent_engine_is_a_metric_not_an_error() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-docker.sock");
    let on = common::config(
        &format!("docker: {{enabled: true, host: 'unix://{}'}}\n", socket.display()),
        dir.path(),
    );
    let app = App::start(on, None).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(metrics(&app).lines().any(|l| l == "vigil_docker_up 0"));
    app.stop();
    // `auto` with no socket: the inventory is off and says nothing.
    let auto = common::config(
        &format!("docker: {{host: 'unix://{}'}}\n", socket.display()),
        dir.path(),
    );
    let app = App::start(auto, None).unwrap();
    assert!(!metrics(&app).contains("vigil_docker_up"));
    app.stop();
}
