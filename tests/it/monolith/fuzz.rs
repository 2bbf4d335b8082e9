//! A property-based fuzzer of the Source API driven by its OpenAPI document:
//! every GET operation gets requests whose parameters are generated from the
//! parameter schemas the document declares (patterns, lengths, ranges). The
//! server must answer each with a status the document declares, never a
//! 5xx, never a 400 (the request was valid by the document), and a body
//! that matches the declared schema of that status.
//!
//! The generator reads the document only; if the document allows more than
//! the server accepts (a control character in a cursor, a membership cursor
//! without `:`), this test finds it.

use super::support::{Contract, Server, TOKEN, into_json};
use anyhow::{Context, bail, ensure};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use recon_core::{Group, Membership, Tenant, User, UserStatus};
use recon_tests::Backend;
use serde_json::Value;

/// Requests per operation.
const CASES_PER_OPERATION: usize = 200;
/// Tenants that exist, so that generated requests reach the 200 paths too.
const TENANTS: [&str; 2] = ["tenant-a", "t:b é"];

/// One query or path parameter of an operation.
struct Parameter {
    name: String,
    location: String,
    required: bool,
    schema: Value,
}

#[tokio::test]
async fn schema_valid_requests_are_never_rejected_and_every_answer_matches_its_schema()
-> anyhow::Result<()> {
    let contract = Contract::load()?;
    let document = contract.document().clone();
    let server = Server::start(Backend::Sqlite, Some(TOKEN)).await?;
    populate(&server).await?;
    let mut runner = TestRunner::new(Config {
        rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
        ..Config::default()
    });
    let paths = document["paths"]
        .as_object()
        .context("the document has no paths")?;
    let mut sent = 0;
    for (template, item) in paths {
        // GET operations: their parameters are the whole request. (The one
        // POST, a page within ranges given in a JSON body, is checked with
        // valid and invalid bodies in `source_api`.)
        let Some(operation) = item.get("get") else {
            continue;
        };
        let parameters = parameters_of(&contract, operation)?;
        let declared: Vec<u16> = operation["responses"]
            .as_object()
            .context("an operation without responses")?
            .keys()
            .filter_map(|status| status.parse().ok())
            .collect();
        for _ in 0..CASES_PER_OPERATION {
            let (path, query) = generate(&mut runner, template, &parameters)?;
            let mut url = reqwest::Url::parse(&server.base_url)?;
            url.path_segments_mut()
                .map_err(|()| anyhow::anyhow!("base URL cannot have segments"))?
                .extend(&path);
            let request = server
                .client
                .get(url.clone())
                .bearer_auth(TOKEN)
                .query(&query);
            let (status, body) = into_json(request.send().await.context("send")?)
                .await
                .with_context(|| format!("GET {url} {query:?}"))?;
            sent += 1;
            ensure!(
                status < 500 && status != 400,
                "a request valid by the document was answered {status}: GET {url} {query:?}: {body}"
            );
            ensure!(
                declared.contains(&status),
                "GET {url} {query:?} ({template}) answered {status}, which the document does not declare ({declared:?}): {body}"
            );
            contract
                .check(template, status, &body)
                .with_context(|| format!("GET {url} {query:?}"))?;
        }
    }
    ensure!(sent >= CASES_PER_OPERATION * 5, "only {sent} requests sent");
    server.stop().await
}

async fn populate(server: &Server) -> anyhow::Result<()> {
    let monolith = &server.monolith;
    for tenant_id in TENANTS {
        let tenant = Tenant {
            id: tenant_id.to_owned(),
            name: format!("Tenant {tenant_id}"),
        };
        monolith.put_tenant(&tenant).await?;
        for number in 0..30 {
            let user = User {
                id: format!("user:{number:02}"),
                email: format!("{number}@example.com"),
                display_name: format!("User {number}"),
                status: UserStatus::Active,
            };
            monolith.put_user(tenant_id, &user).await?;
        }
        for number in 0..5 {
            let group = Group {
                id: format!("group {number}"),
                name: format!("Group {number}"),
            };
            monolith.put_group(tenant_id, &group).await?;
            for user in 0..10 {
                let membership = Membership {
                    group_id: group.id.clone(),
                    user_id: format!("user:{user:02}"),
                };
                monolith.put_membership(tenant_id, &membership).await?;
            }
        }
    }
    Ok(())
}

/// The GET operation's parameters, `$ref`s followed.
fn parameters_of(contract: &Contract, operation: &Value) -> anyhow::Result<Vec<Parameter>> {
    let mut parameters = Vec::new();
    for declared in operation["parameters"].as_array().into_iter().flatten() {
        let declared = contract.resolve(declared)?;
        parameters.push(Parameter {
            name: declared["name"]
                .as_str()
                .context("unnamed parameter")?
                .to_owned(),
            location: declared["in"]
                .as_str()
                .context("parameter without `in`")?
                .to_owned(),
            required: declared["required"].as_bool().unwrap_or(false),
            schema: contract.resolve(&declared["schema"])?.clone(),
        });
    }
    Ok(parameters)
}

/// Query pairs of a request.
type Query = Vec<(String, String)>;

/// Path segments (the template with its parameters filled in) and query
/// pairs of one generated request.
fn generate(
    runner: &mut TestRunner,
    template: &str,
    parameters: &[Parameter],
) -> anyhow::Result<(Vec<String>, Query)> {
    let mut segments: Vec<String> = template
        .trim_start_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect();
    let mut query = Vec::new();
    for parameter in parameters {
        let include = parameter.required || sample(runner, any::<bool>())?;
        if !include {
            continue;
        }
        let value = if parameter.location == "path" && parameter.name == "tenant_id" {
            // Mostly tenants that exist, so that the 200 answers are fuzzed too.
            let known = prop::sample::select(TENANTS.to_vec()).prop_map(str::to_owned);
            let generated = value_strategy(&parameter.schema)?;
            sample(runner, prop_oneof![3 => known, 1 => generated])?
        } else {
            sample(runner, value_strategy(&parameter.schema)?)?
        };
        // URL parsers remove "." and ".." path segments (RFC 3986 §5.2.4,
        // percent-encoded or not): such an id cannot be put in a path, so
        // a request for it reaches another route.
        let value = if parameter.location == "path" && (value == "." || value == "..") {
            "dot-segment".to_owned()
        } else {
            value
        };
        match parameter.location.as_str() {
            "path" => {
                let placeholder = format!("{{{}}}", parameter.name);
                for segment in &mut segments {
                    if *segment == placeholder {
                        *segment = value.clone();
                    }
                }
            }
            "query" => query.push((parameter.name.clone(), value)),
            other => bail!("parameter {} in {other} is not supported", parameter.name),
        }
    }
    Ok((segments, query))
}

fn sample<T: std::fmt::Debug>(
    runner: &mut TestRunner,
    strategy: impl Strategy<Value = T>,
) -> anyhow::Result<T> {
    let tree = strategy
        .new_tree(runner)
        .map_err(|reason| anyhow::anyhow!("generate a value: {reason}"))?;
    Ok(tree.current())
}

/// Values (as query/path text) valid by a parameter schema: strings from
/// the schema's `pattern` (or any text) within its lengths, integers within
/// their range.
fn value_strategy(schema: &Value) -> anyhow::Result<BoxedStrategy<String>> {
    match schema["type"].as_str() {
        Some("integer") => {
            let minimum = schema["minimum"].as_i64().unwrap_or(i64::MIN);
            let maximum = schema["maximum"].as_i64().unwrap_or(i64::MAX);
            Ok((minimum..=maximum).prop_map(|n| n.to_string()).boxed())
        }
        Some("string") => {
            let min_length = schema["minLength"].as_u64().unwrap_or(0) as usize;
            let max_length = schema["maxLength"].as_u64().unwrap_or(300) as usize;
            let text = match schema["pattern"].as_str() {
                Some(pattern) => {
                    let unanchored = pattern.trim_start_matches('^').trim_end_matches('$');
                    proptest::string::string_regex(unanchored)
                        .with_context(|| format!("pattern {pattern:?}"))?
                        .boxed()
                }
                None => proptest::collection::vec(any::<char>(), min_length..=max_length)
                    .prop_map(|chars| chars.into_iter().collect::<String>())
                    .boxed(),
            };
            Ok(text
                .prop_filter("length within the schema", move |text| {
                    (min_length..=max_length).contains(&text.chars().count())
                })
                .boxed())
        }
        other => bail!("parameter schema type {other:?} is not supported"),
    }
}
