//! The Kubernetes manifests (`deploy/k8s`), offline: `kubectl kustomize`
//! renders the base and the example overlay, every rendered object is
//! validated against the Kubernetes schemas (`kubernetes-validate`, from
//! PyPI, strict), and the objects are checked for what operators rely on:
//! probes on the admin port, no secret in a ConfigMap, pinned images,
//! consistent labels, non-root containers, a grace period covering a batch,
//! `recon store migrate` before `recon serve` (replicas refuse a store that
//! is behind).
//! `scripts/test.sh` installs `kubernetes-validate` in a virtualenv and
//! puts it on PATH; kubectl is on the machine (no cluster is needed).
//!
//! The compose stack, offline too (no Docker daemon here): validated
//! against the compose specification (`check-jsonschema`), every service
//! the README names is in it and nothing else, images are pinned, the files
//! it mounts exist, the replicas' admin token comes from a file, and the
//! replicas start once `recon store migrate` has succeeded on their store.

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(program: &str, arguments: &[&str], input: Option<&str>) -> anyhow::Result<String> {
    use std::io::Write as _;
    let mut child = Command::new(program)
        .args(arguments)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("run {program} (scripts/test.sh installs it)"))?;
    if let Some(input) = input {
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(input.as_bytes())?;
    }
    drop(child.stdin.take());
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "{program} {arguments:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr))
}

/// The Python of the virtualenv `kubernetes-validate` lives in (it ships
/// PyYAML, used here to turn the rendered YAML into JSON).
fn python() -> anyhow::Result<PathBuf> {
    let validate = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|directory| directory.join("kubernetes-validate"))
        .find(|candidate| candidate.is_file())
        .context("kubernetes-validate not on PATH (scripts/test.sh installs it)")?;
    Ok(validate.with_file_name("python3"))
}

/// A YAML document as JSON, through the virtualenv's PyYAML.
fn yaml_to_json(yaml: &str) -> anyhow::Result<Value> {
    let json = run(
        &python()?.display().to_string(),
        &[
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ],
        Some(yaml),
    )?;
    Ok(serde_json::from_str(&json)?)
}

/// Renders `directory` and returns its objects as JSON values, after
/// validating them.
fn render_and_validate(directory: &str) -> anyhow::Result<Vec<Value>> {
    let path = repository().join(directory);
    let rendered = run("kubectl", &["kustomize", &path.display().to_string()], None)?;
    let file = tempfile::Builder::new().suffix(".yaml").tempfile()?;
    std::fs::write(file.path(), &rendered)?;
    let report = run(
        "kubernetes-validate",
        &[
            "--strict",
            "-k",
            "1.32.0",
            &file.path().display().to_string(),
        ],
        None,
    )?;
    for line in report.lines().filter(|line| !line.starts_with("INFO")) {
        // CRDs have no schema in kubernetes-validate; only the
        // Prometheus Operator's ServiceMonitor is expected.
        if !line.contains("kind ServiceMonitor with api version monitoring.coreos.com/v1") {
            bail!("{directory}: {line}");
        }
    }
    let json = run(
        &python()?.display().to_string(),
        &[
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
        ],
        Some(&rendered),
    )?;
    Ok(serde_json::from_str(&json)?)
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// The pod template of a workload (Deployment or CronJob).
fn pod_spec(object: &Value) -> Option<&Value> {
    match kind(object) {
        "Deployment" => Some(&object["spec"]["template"]["spec"]),
        "CronJob" => Some(&object["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        _ => None,
    }
}

/// Checks the rendered objects; `with_secrets`: the Secrets the pods
/// refer to must be among them (an overlay's job, not the base's).
fn check(objects: &[Value], with_secrets: bool) -> anyhow::Result<()> {
    let kinds: Vec<&str> = objects.iter().map(kind).collect();
    for expected in [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "ConfigMap",
        "CronJob",
    ] {
        ensure!(
            kinds.contains(&expected),
            "no {expected} rendered: {kinds:?}"
        );
    }
    for object in objects {
        let labels = &object["metadata"]["labels"];
        ensure!(
            labels["app.kubernetes.io/name"] == "recon",
            "{} {} lacks app.kubernetes.io/name=recon",
            kind(object),
            name(object)
        );
        if kind(object) == "ConfigMap" {
            for (key, value) in object["data"].as_object().into_iter().flatten() {
                let value = value.as_str().unwrap_or_default();
                let secret_key = ["PASSWORD", "TOKEN", "SECRET", "DATABASE_URL", "KEY"]
                    .iter()
                    .any(|word| key.to_uppercase().contains(word));
                let credentials_in_url = value.contains("://") && value.contains('@');
                ensure!(
                    !secret_key && !credentials_in_url,
                    "ConfigMap {} holds a secret: {key}",
                    name(object)
                );
            }
        }
        let Some(pod) = pod_spec(object) else {
            continue;
        };
        ensure!(
            pod["securityContext"]["runAsNonRoot"] == true,
            "{} {} may run as root",
            kind(object),
            name(object)
        );
        let containers = pod["containers"].as_array().into_iter().flatten();
        let init_containers = pod["initContainers"].as_array().into_iter().flatten();
        for container in containers.chain(init_containers) {
            let image = container["image"].as_str().unwrap_or_default();
            let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
            ensure!(
                !tag.is_empty() && tag != "latest" && !tag.contains('/'),
                "image {image:?} is not pinned to a tag"
            );
            ensure!(
                container["resources"]["requests"]["memory"].is_string(),
                "{image} has no memory request"
            );
        }
    }
    let deployment = objects
        .iter()
        .find(|object| kind(object) == "Deployment")
        .context("no Deployment")?;
    let template_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (key, value) in deployment["spec"]["selector"]["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
    {
        ensure!(
            &template_labels[key] == value,
            "the Deployment's selector {key}={value} does not match its pods"
        );
    }
    let pod = pod_spec(deployment).context("no pod template")?;
    ensure!(
        pod["terminationGracePeriodSeconds"].as_u64() >= Some(20),
        "the grace period does not cover a batch and the session's revocation"
    );
    let container = &pod["containers"][0];
    check_migration_first(pod, container)?;
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        ensure!(
            container[probe]["httpGet"]["path"] == path,
            "{probe} is not GET {path}: {}",
            container[probe]
        );
    }
    let environment: Vec<&Value> = container["env"].as_array().into_iter().flatten().collect();
    let variable = |name: &str| environment.iter().find(|variable| variable["name"] == name);
    for secret in [
        "RECON_DATABASE_URL",
        "RECON_ADMIN_TOKEN",
        "RECON_SOURCE_TOKEN",
    ] {
        ensure!(
            variable(secret).is_none(),
            "{secret} is set as a variable; secrets come from files"
        );
        let file = variable(&format!("{secret}_FILE"))
            .and_then(|variable| variable["value"].as_str())
            .with_context(|| format!("{secret}_FILE is not set"))?;
        let mounted = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|mount| mount["mountPath"].as_str())
            .any(|path| file.starts_with(path));
        ensure!(mounted, "{secret}_FILE={file} is on no mounted volume");
    }
    let secrets: Vec<&str> = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|volume| volume["secret"]["secretName"].as_str())
        .collect();
    ensure!(!secrets.is_empty(), "no Secret is mounted");
    let advertised = variable("RECON_ADVERTISE_ADMIN_URL")
        .and_then(|variable| variable["value"].as_str())
        .unwrap_or_default();
    ensure!(
        !advertised.is_empty() && !advertised.contains("0.0.0.0"),
        "the advertised admin URL {advertised:?} is not reachable by other replicas"
    );
    for secret in secrets.iter().filter(|_| with_secrets) {
        let made = objects
            .iter()
            .any(|object| kind(object) == "Secret" && name(object) == *secret);
        ensure!(
            made,
            "the Deployment refers to Secret {secret}, which is not made"
        );
    }
    Ok(())
}

/// The replica pod's init container runs `recon store migrate` on the
/// replica's database, from the replica's image, its URL from a mounted
/// file.
fn check_migration_first(pod: &Value, replica: &Value) -> anyhow::Result<()> {
    let migrate = pod["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|container| container["args"] == serde_json::json!(["store", "migrate"]))
        .context("no init container runs `recon store migrate` before `recon serve`")?;
    ensure!(
        migrate["image"] == replica["image"],
        "the migration runs {} but the replica {}",
        migrate["image"],
        replica["image"]
    );
    let database_url_file = |container: &Value| {
        container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|variable| variable["name"] == "RECON_DATABASE_URL_FILE")
            .map(|variable| variable["value"].clone())
    };
    let file =
        database_url_file(migrate).context("the migration has no RECON_DATABASE_URL_FILE")?;
    ensure!(
        Some(&file) == database_url_file(replica).as_ref(),
        "the migration and the replica read different database URLs"
    );
    let file = file.as_str().unwrap_or_default();
    let mounted = migrate["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|mount| mount["mountPath"].as_str())
        .any(|path| file.starts_with(path));
    ensure!(
        mounted,
        "the migration's database URL {file} is on no mounted volume"
    );
    Ok(())
}

#[test]
fn the_kubernetes_base_and_overlay_render_validate_and_hold_together() -> anyhow::Result<()> {
    check(&render_and_validate("deploy/k8s/base")?, false).context("base")?;
    let overlay = render_and_validate("deploy/k8s/overlays/example")?;
    check(&overlay, true).context("example overlay")?;
    let replicas = overlay
        .iter()
        .find(|object| kind(object) == "Deployment")
        .map(|deployment| deployment["spec"]["replicas"].clone());
    ensure!(
        replicas == Some(Value::from(5)),
        "the overlay's replica count: {replicas:?}"
    );
    ensure!(
        overlay
            .iter()
            .all(|object| object["metadata"]["namespace"] == "recon"),
        "an object outside the overlay's namespace"
    );
    Ok(())
}

#[test]
fn the_compose_stack_validates_and_holds_what_the_readme_names() -> anyhow::Result<()> {
    let path = repository().join("docker-compose.yml");
    run(
        "check-jsonschema",
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            &path.display().to_string(),
        ],
        None,
    )?;
    let compose = yaml_to_json(&std::fs::read_to_string(&path)?)?;
    let services = compose["services"].as_object().context("no services")?;
    let readme = std::fs::read_to_string(repository().join("README.md"))?;
    let start = readme
        .find("Services: `")
        .context("the README names no services")?;
    let end = start + readme[start..].find('.').context("unterminated list")?;
    let named: Vec<&str> = readme[start..end].split('`').skip(1).step_by(2).collect();
    ensure!(named.len() >= 10, "only {named:?} named");
    for name in &named {
        ensure!(
            services.contains_key(*name),
            "the README names `{name}`, which compose lacks"
        );
    }
    for name in services.keys() {
        ensure!(
            named.contains(&name.as_str()),
            "compose runs `{name}`, which the README does not name"
        );
    }
    for (name, service) in services {
        if let Some(image) = service["image"].as_str() {
            let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
            ensure!(
                !tag.is_empty() && tag != "latest",
                "{name}: image {image} is not pinned"
            );
        } else {
            ensure!(
                service["build"].is_object(),
                "{name} has neither image nor build"
            );
        }
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume
                .as_str()
                .and_then(|text| text.split(':').next())
                .unwrap_or_default();
            if source.starts_with("./") {
                ensure!(
                    repository().join(source).exists(),
                    "{name} mounts {source}, which does not exist"
                );
            }
        }
    }
    for replica in ["replica-1", "replica-2", "replica-3"] {
        let environment = &services[replica]["environment"];
        ensure!(
            environment["RECON_ADMIN_TOKEN_FILE"].is_string(),
            "{replica} has no admin token file"
        );
        ensure!(
            environment["RECON_ADMIN_TOKEN"].is_null(),
            "{replica} has its admin token in a variable"
        );
    }
    let migrate = &services["migrate"];
    ensure!(
        migrate["command"] == serde_json::json!(["store", "migrate"]),
        "the migrate service runs {}",
        migrate["command"]
    );
    for replica in ["replica-1", "replica-2", "replica-3"] {
        ensure!(
            services[replica]["depends_on"]["migrate"]["condition"]
                == "service_completed_successfully",
            "{replica} may start before the store is migrated"
        );
        ensure!(
            services[replica]["environment"]["RECON_DATABASE_URL"]
                == migrate["environment"]["RECON_DATABASE_URL"],
            "{replica} and the migration use different stores"
        );
    }
    for secret in compose["secrets"].as_object().into_iter().flatten() {
        let file = secret.1["file"].as_str().unwrap_or_default();
        ensure!(
            repository().join(file).exists(),
            "secret {} reads {file}, which does not exist",
            secret.0
        );
    }
    Ok(())
}

#[test]
fn the_image_runs_as_a_non_root_user_and_its_context_leaves_the_build_output_out()
-> anyhow::Result<()> {
    let dockerfile = std::fs::read_to_string(repository().join("deploy/Dockerfile"))?;
    let stages: Vec<&str> = dockerfile.split("\nFROM ").collect();
    let runtime = stages.last().context("no stage")?;
    let user = runtime
        .lines()
        .filter_map(|line| line.trim().strip_prefix("USER "))
        .next_back()
        .context("the runtime stage sets no USER")?;
    let uid = user.split(':').next().unwrap_or_default();
    ensure!(
        uid != "0" && uid != "root" && !uid.is_empty(),
        "the image runs as {user}"
    );
    ensure!(
        dockerfile.contains("--mount=type=cache,target=/usr/local/cargo/registry"),
        "the dependency build is not cached between builds"
    );
    ensure!(
        runtime.contains("libssl3"),
        "the runtime stage lacks OpenSSL, which rdkafka links"
    );
    let ignored = std::fs::read_to_string(repository().join(".dockerignore"))
        .context("no .dockerignore: the build context would carry target/")?;
    for path in ["target/", ".git/"] {
        ensure!(
            ignored.lines().any(|line| line.trim() == path),
            ".dockerignore does not leave out {path}"
        );
    }
    Ok(())
}
