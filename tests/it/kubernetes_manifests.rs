//! The shipped manifests in `deploy/kubernetes/`: every document parses as its kind's
//! Kubernetes type with no field the type does not know (a typo would be dropped silently by
//! the API server), the RBAC rules grant only get/list/watch on what vigil reads, the config in
//! the ConfigMap is valid, and the pieces agree (names, labels, ports, mount paths).
//!
//! The limit: no API server runs here, so nothing is applied; `kubectl apply --dry-run=client`
//! needs one too. `kubectl kustomize deploy/kubernetes` renders offline, if kubectl is at hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

fn to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Real(r) => serde_json::from_str(r).unwrap(),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::from(s.as_str()),
        Yaml::Boolean(b) => Value::from(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.as_str().expect("string keys").to_string(), to_json(v)))
                .collect(),
        ),
        Yaml::Null => Value::Null,
        other => panic!("unsupported YAML: {other:?}"),
    }
}

/// Every document of every manifest, by kind, with the file it came from.
fn documents() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        for doc in YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}")) {
            docs.push((name.clone(), to_json(&doc)));
        }
    }
    docs
}

/// Parses `doc` as `T` and checks that serializing it back loses nothing.
fn typed<T: DeserializeOwned + serde::Serialize>(file: &str, doc: &Value) -> T {
    let object: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{file}: {e}\n{doc:#}"));
    let back = serde_json::to_value(&object).unwrap();
    assert_eq!(&back, doc, "{file}: a field the type does not know (typo?)");
    object
}

#[derive(Default)]
struct Manifests {
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    bindings: Vec<RoleBinding>,
    config_maps: Vec<ConfigMap>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    kustomization: Option<Value>,
}

fn manifests() -> Manifests {
    let mut m = Manifests::default();
    for (file, doc) in documents() {
        let kind = doc["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: no kind"))
            .to_string();
        match kind.as_str() {
            "ServiceAccount" => m.service_accounts.push(typed(&file, &doc)),
            "ClusterRole" => m.cluster_roles.push(typed(&file, &doc)),
            "ClusterRoleBinding" => m.cluster_bindings.push(typed(&file, &doc)),
            "Role" => m.roles.push(typed(&file, &doc)),
            "RoleBinding" => m.bindings.push(typed(&file, &doc)),
            "ConfigMap" => m.config_maps.push(typed(&file, &doc)),
            "Deployment" => m.deployments.push(typed(&file, &doc)),
            "Service" => m.services.push(typed(&file, &doc)),
            "Kustomization" => m.kustomization = Some(doc),
            other => panic!("{file}: unexpected kind {other}"),
        }
    }
    m
}

/// What the Kubernetes inventory requests (see tests/it/kubernetes.rs): exactly this, read-only.
fn check_rules(what: &str, rules: &[PolicyRule]) {
    let mut granted = BTreeSet::new();
    for rule in rules {
        let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
        assert_eq!(
            verbs,
            BTreeSet::from(["get", "list", "watch"]),
            "{what}: read-only verbs"
        );
        for group in rule.api_groups.as_deref().unwrap_or_default() {
            for resource in rule.resources.as_deref().unwrap_or_default() {
                granted.insert((group.as_str(), resource.as_str()));
            }
        }
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "{what}"
        );
    }
    let needed = BTreeSet::from([
        ("", "pods"),
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
    ]);
    assert_eq!(granted, needed, "{what}: what vigil reads, nothing more");
}

#[test]
fn rbac_is_read_only_and_bound_to_the_service_account() {
    let m = manifests();
    // rbac.yaml and rbac-namespaced.yaml each declare it (one of them is applied): the same.
    let [account, again] = m.service_accounts.as_slice() else {
        panic!("a ServiceAccount in each RBAC file")
    };
    assert_eq!(account, again);
    let sa_name = account.metadata.name.as_deref().unwrap();
    let sa_namespace = account.metadata.namespace.as_deref().unwrap();
    let [role] = m.cluster_roles.as_slice() else {
        panic!("one ClusterRole")
    };
    check_rules("ClusterRole", role.rules.as_deref().unwrap());
    let [binding] = m.cluster_bindings.as_slice() else {
        panic!("one ClusterRoleBinding")
    };
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(binding.role_ref.name.as_str()), role.metadata.name.as_deref());
    let [ns_role] = m.roles.as_slice() else {
        panic!("the namespaced variant's Role")
    };
    check_rules("Role", ns_role.rules.as_deref().unwrap());
    let [ns_binding] = m.bindings.as_slice() else {
        panic!("the namespaced variant's RoleBinding")
    };
    assert_eq!(ns_binding.role_ref.kind, "Role");
    assert_eq!(ns_binding.metadata.namespace, ns_role.metadata.namespace);
    assert_eq!(
        Some(ns_binding.role_ref.name.as_str()),
        ns_role.metadata.name.as_deref()
    );
    for subjects in [&binding.subjects, &ns_binding.subjects] {
        let [subject] = subjects.as_deref().unwrap() else {
            panic!("one subject")
        };
        assert_eq!(subject.kind, "ServiceAccount");
        assert_eq!(subject.name, sa_name);
        assert_eq!(subject.namespace.as_deref(), Some(sa_namespace));
    }
}

#[test]
fn deployment_service_and_config_agree() {
    let m = manifests();
    let [deployment] = m.deployments.as_slice() else {
        panic!("one Deployment")
    };
    let [service] = m.services.as_slice() else {
        panic!("one Service")
    };
    let [config_map] = m.config_maps.as_slice() else {
        panic!("one ConfigMap")
    };
    let spec = deployment.spec.as_ref().unwrap();
    let template = spec.template.spec.as_ref().unwrap();
    let pod_labels = spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
    let selector = spec.selector.match_labels.as_ref().unwrap();
    assert!(
        selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
        "selector matches the pods"
    );
    let service_spec = service.spec.as_ref().unwrap();
    let service_selector = service_spec.selector.as_ref().unwrap();
    assert!(
        service_selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
        "the Service selects the pods"
    );
    assert_eq!(template.service_account_name.as_deref(), Some("vigil"));
    assert_eq!(spec.replicas, Some(1));

    let [container] = template.containers.as_slice() else {
        panic!("one container")
    };
    let args = container.args.as_deref().unwrap();
    assert_eq!(&args[..2], ["vigil", "run"]);
    let config_path = args.iter().skip_while(|a| *a != "--config").nth(1).expect("--config");
    let [port] = container.ports.as_deref().unwrap() else {
        panic!("one port")
    };
    assert_eq!(port.container_port, 9430);
    let [service_port] = service_spec.ports.as_deref().unwrap() else {
        panic!("one Service port")
    };
    assert_eq!(service_port.port, 9430);
    assert_eq!(
        service_port.target_port,
        Some(IntOrString::String(port.name.clone().unwrap()))
    );
    let annotations = service.metadata.annotations.as_ref().unwrap();
    let want: BTreeMap<String, String> = [
        ("prometheus.io/scrape", "true"),
        ("prometheus.io/port", "9430"),
        ("prometheus.io/path", "/metrics"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(annotations, &want);
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));

    // The config file comes from the ConfigMap's key, mounted where --config points; the state
    // folder (--storage.path) is a writable volume, the root file system being read-only.
    let mounts = container.volume_mounts.as_deref().unwrap();
    let volumes = template.volumes.as_deref().unwrap();
    let [mount, state] = mounts else {
        panic!("two mounts: the config and the state")
    };
    let key = Path::new(config_path)
        .strip_prefix(&mount.mount_path)
        .expect("--config inside the mount");
    let storage = args
        .iter()
        .position(|a| a == "--storage.path")
        .map(|i| args[i + 1].as_str())
        .expect("--storage.path");
    assert_eq!(state.mount_path, storage);
    assert_ne!(state.read_only, Some(true));
    let state_volume = volumes.iter().find(|v| v.name == state.name).expect("the state volume");
    assert!(state_volume.empty_dir.is_some() || state_volume.persistent_volume_claim.is_some());
    let volume = volumes
        .iter()
        .find(|v| v.name == mount.name)
        .expect("the config volume");
    assert_eq!(
        volume.config_map.as_ref().unwrap().name,
        config_map.metadata.name.clone().unwrap()
    );
    let text = &config_map.data.as_ref().unwrap()[key.to_str().unwrap()];
    let config = vigil::config::Config::parse(text, Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.kubernetes.enabled, "the shipped config watches the cluster");
    assert!(
        config.kubernetes.namespaces.is_empty(),
        "rbac.yaml grants every namespace; the config uses it"
    );
}

#[test]
fn kustomization_lists_existing_files_with_one_rbac_variant() {
    let m = manifests();
    let kustomization = m.kustomization.expect("kustomization.yaml");
    let resources: Vec<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for file in &resources {
        assert!(dir().join(file).is_file(), "{file}");
    }
    assert!(resources.contains(&"rbac.yaml") && !resources.contains(&"rbac-namespaced.yaml"));
    assert_eq!(kustomization["namespace"], "monitoring");
}
