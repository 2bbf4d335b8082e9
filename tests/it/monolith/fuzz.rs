//! A property-based fuzzer of the Source API driven by its OpenAPI document,
//! over every operation the document declares (the GETs and the POSTs):
//!
//! * requests valid by the document, their parameters and JSON bodies
//!   generated from the declared schemas ([`values`]): the server must
//!   answer each with a status the document declares, never a 5xx, never a
//!   400, and a body that matches the declared schema of that status;
//! * requests the document forbids in one place (an unknown query
//!   parameter, a parameter or a body its schema refuses, as the document's
//!   own validator judges): the server must refuse each with a 400 whose
//!   body matches the declared schema.
//!
//! The generator reads the document only, apart from what the document
//! states in prose because JSON Schema cannot say it (the ranges of a
//! multi-range page are in key order and disjoint: [`arrange_ranges`]). If
//! the document allows more than the server accepts, or forbids what the
//! server accepts, this test finds it. The seed is fixed, so a run repeats
//! the last one; a failure lists requests that disagree, per operation.

mod values;

use self::values::{Schemas, sample, text_of};
use super::source_api::urlencode;
use super::support::{Contract, Server, TOKEN, into_json};
use anyhow::{Context, bail, ensure};
use jsonschema::Validator;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestRunner};
use recon_core::{Group, Membership, Tenant, User, UserStatus};
use recon_tests::Backend;
use reqwest::Method;
use serde_json::{Value, json};
use std::fmt;

/// The seed of every run.
const SEED: u64 = 17;
/// Requests valid by the document, per operation.
const VALID_PER_OPERATION: usize = 100;
/// Requests the document forbids, per operation.
const INVALID_PER_OPERATION: usize = 100;
/// Disagreements quoted per operation and kind when the test fails.
const QUOTED_PER_OPERATION: usize = 3;
/// Characters quoted of each.
const QUOTED_CHARS: usize = 500;
/// Tenants that exist, so that generated requests reach the 200 paths too.
const TENANTS: [&str; 2] = ["tenant-a", "t:b é"];

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Location {
    Path,
    Query,
}

/// One path or query parameter of an operation.
struct Parameter {
    name: String,
    location: Location,
    required: bool,
    schema: Value,
    validator: Validator,
}

/// The JSON request body of an operation.
struct Body {
    schema: Value,
    validator: Validator,
}

/// One operation of the document.
struct Operation {
    method: Method,
    template: String,
    parameters: Vec<Parameter>,
    body: Option<Body>,
    declared: Vec<u16>,
}

impl fmt::Display for Operation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {}", self.method, self.template)
    }
}

/// One request: its operation's path template and the values of its path
/// parameters, its query pairs and JSON body.
struct Request {
    method: Method,
    template: String,
    path: Vec<(String, String)>,
    query: Vec<(String, String)>,
    body: Option<Value>,
}

impl fmt::Display for Request {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = format!("/{}", self.segments().join("/"));
        write!(formatter, "{} {path:?} query {:?}", self.method, self.query)?;
        if let Some(body) = &self.body {
            write!(formatter, " body {body}")?;
        }
        Ok(())
    }
}

impl Request {
    /// A request of `operation` without parameters or body yet.
    fn of(operation: &Operation) -> Self {
        Request {
            method: operation.method.clone(),
            template: operation.template.clone(),
            path: Vec::new(),
            query: Vec::new(),
            body: None,
        }
    }

    /// Gives `parameter` the value `text`, replacing any it had.
    fn set(&mut self, parameter: &Parameter, text: String) {
        let pairs = match parameter.location {
            Location::Path => &mut self.path,
            Location::Query => &mut self.query,
        };
        pairs.retain(|(name, _)| *name != parameter.name);
        pairs.push((parameter.name.clone(), text));
    }

    /// The path segments: the template with the path parameters filled in.
    fn segments(&self) -> Vec<String> {
        let mut segments = Vec::new();
        for segment in self.template.trim_start_matches('/').split('/') {
            let value = self
                .path
                .iter()
                .find(|(name, _)| segment == format!("{{{name}}}"))
                .map(|(_, value)| value.as_str());
            segments.push(value.unwrap_or(segment).to_owned());
        }
        segments
    }
}

/// What one operation's requests came to.
#[derive(Default)]
struct Tally {
    valid_sent: usize,
    answered_ok: usize,
    invalid_sent: usize,
    /// Valid requests answered otherwise than the document says.
    valid_disagreements: Vec<String>,
    /// Forbidden requests not refused as the document says.
    invalid_disagreements: Vec<String>,
}

#[tokio::test]
async fn the_server_accepts_what_the_document_allows_and_refuses_what_it_forbids()
-> anyhow::Result<()> {
    let contract = Contract::load()?;
    let operations = operations(&contract)?;
    let schemas = Schemas::new(contract.document());
    // PostgreSQL: a monolith there serves every route (SQLite offers no
    // digests, so their 200 answers would never be fuzzed).
    let server = Server::start(Backend::Postgres, Some(TOKEN)).await?;
    populate(&server).await?;
    let mut runner = TestRunner::new(Config {
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(SEED),
        ..Config::default()
    });
    ensure!(!operations.is_empty(), "the document declares no operation");
    let mut tallies = Vec::new();
    for operation in &operations {
        tallies.push(fuzz(&server, &contract, &schemas, &mut runner, operation).await?);
    }
    server.stop().await?;
    verdict(&operations, &tallies)
}

/// Sends one operation its valid and forbidden requests.
async fn fuzz(
    server: &Server,
    contract: &Contract,
    schemas: &Schemas<'_>,
    runner: &mut TestRunner,
    operation: &Operation,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    for _ in 0..VALID_PER_OPERATION {
        let request = valid_request(schemas, runner, operation)?;
        let (status, body) = send(server, &request).await?;
        tally.valid_sent += 1;
        if status == 200 {
            tally.answered_ok += 1;
        }
        if let Err(problem) = check_allowed(contract, operation, status, &body) {
            tally
                .valid_disagreements
                .push(format!("{request}: {problem:#}"));
        }
    }
    for _ in 0..INVALID_PER_OPERATION {
        let Some((request, forbidden)) = invalid_request(schemas, runner, operation)? else {
            continue;
        };
        let (status, body) = send(server, &request).await?;
        tally.invalid_sent += 1;
        if let Err(problem) = check_refused(contract, operation, status, &body) {
            tally
                .invalid_disagreements
                .push(format!("{request} ({forbidden}): {problem:#}"));
        }
    }
    Ok(tally)
}

/// Every operation answered some valid requests with 200, got enough
/// forbidden requests, and none of its requests disagrees.
fn verdict(operations: &[Operation], tallies: &[Tally]) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for (operation, tally) in operations.iter().zip(tallies) {
        if tally.answered_ok == 0 {
            problems.push(format!(
                "{operation}: none of {} valid requests was answered 200",
                tally.valid_sent
            ));
        }
        if tally.invalid_sent < INVALID_PER_OPERATION / 2 {
            problems.push(format!(
                "{operation}: only {} forbidden requests could be made",
                tally.invalid_sent
            ));
        }
        for (disagreements, sent, kind) in [
            (&tally.valid_disagreements, tally.valid_sent, "valid"),
            (
                &tally.invalid_disagreements,
                tally.invalid_sent,
                "forbidden",
            ),
        ] {
            if disagreements.is_empty() {
                continue;
            }
            let quoted: Vec<String> = disagreements
                .iter()
                .take(QUOTED_PER_OPERATION)
                .map(|disagreement| shortened(disagreement))
                .collect();
            problems.push(format!(
                "{operation}: {} of {sent} {kind} requests disagree with the document, e.g.\n    {}",
                disagreements.len(),
                quoted.join("\n    ")
            ));
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// At most [`QUOTED_CHARS`] characters of `text`.
fn shortened(text: &str) -> String {
    if text.chars().count() <= QUOTED_CHARS {
        return text.to_owned();
    }
    let start: String = text.chars().take(QUOTED_CHARS / 2).collect();
    let end: String = text
        .chars()
        .skip(text.chars().count() - QUOTED_CHARS / 2)
        .collect();
    format!("{start} [...] {end}")
}

/// A request valid by the document was answered as the document says.
fn check_allowed(
    contract: &Contract,
    operation: &Operation,
    status: u16,
    body: &Value,
) -> anyhow::Result<()> {
    if status >= 500 || status == 400 {
        bail!("a request valid by the document was answered {status}: {body}");
    }
    if !operation.declared.contains(&status) {
        bail!(
            "answered {status}, which the document does not declare ({:?}): {body}",
            operation.declared
        );
    }
    contract.check(&operation.template, status, body)
}

/// A request the document forbids was refused with a declared 400.
fn check_refused(
    contract: &Contract,
    operation: &Operation,
    status: u16,
    body: &Value,
) -> anyhow::Result<()> {
    if status != 400 {
        bail!("a request the document forbids was answered {status}, not 400: {body}");
    }
    contract.check(&operation.template, status, body)
}

/// Every operation of the document, its parameters and body with their
/// validators.
fn operations(contract: &Contract) -> anyhow::Result<Vec<Operation>> {
    let paths = contract.document()["paths"]
        .as_object()
        .context("the document has no paths")?;
    let mut operations = Vec::new();
    for (template, item) in paths {
        for (method, operation) in item.as_object().context("a path item")? {
            let method = match method.as_str() {
                "get" => Method::GET,
                "post" => Method::POST,
                other => bail!("{other} in {template} is not supported by the fuzzer"),
            };
            let declared = operation["responses"]
                .as_object()
                .context("an operation without responses")?
                .keys()
                .filter_map(|status| status.parse().ok())
                .collect();
            operations.push(Operation {
                method,
                template: template.clone(),
                parameters: parameters_of(contract, operation)?,
                body: body_of(contract, operation)?,
                declared,
            });
        }
    }
    Ok(operations)
}

/// The operation's parameters, `$ref`s followed.
fn parameters_of(contract: &Contract, operation: &Value) -> anyhow::Result<Vec<Parameter>> {
    let mut parameters = Vec::new();
    for declared in operation["parameters"].as_array().into_iter().flatten() {
        let declared = contract.resolve(declared)?;
        let name = declared["name"].as_str().context("unnamed parameter")?;
        let location = match declared["in"].as_str() {
            Some("path") => Location::Path,
            Some("query") => Location::Query,
            other => bail!("parameter {name} in {other:?} is not supported"),
        };
        let schema = declared["schema"].clone();
        parameters.push(Parameter {
            name: name.to_owned(),
            location,
            required: declared["required"].as_bool().unwrap_or(false),
            validator: contract
                .validator(&schema)
                .with_context(|| format!("the schema of parameter {name}"))?,
            schema,
        });
    }
    Ok(parameters)
}

/// The operation's JSON request body, if it has one.
fn body_of(contract: &Contract, operation: &Value) -> anyhow::Result<Option<Body>> {
    let Some(declared) = operation.get("requestBody") else {
        return Ok(None);
    };
    let declared = contract.resolve(declared)?;
    ensure!(
        declared["required"] == json!(true),
        "an optional request body is not supported"
    );
    let schema = declared["content"]["application/json"]["schema"].clone();
    ensure!(schema.is_object(), "a request body without a JSON schema");
    Ok(Some(Body {
        validator: contract.validator(&schema).context("the body schema")?,
        schema,
    }))
}

/// A request valid by the document.
fn valid_request(
    schemas: &Schemas,
    runner: &mut TestRunner,
    operation: &Operation,
) -> anyhow::Result<Request> {
    let mut request = Request::of(operation);
    for parameter in &operation.parameters {
        if !parameter.required && !sample(runner, any::<bool>())? {
            continue;
        }
        // Mostly tenants that exist, so that the 200 answers are fuzzed too.
        let value = if parameter.name == "tenant_id" && sample(runner, 0..4u8)? > 0 {
            let known = sample(runner, prop::sample::select(TENANTS.to_vec()))?;
            Value::from(known)
        } else {
            schemas.valid(runner, &parameter.schema)?
        };
        ensure!(
            parameter.validator.is_valid(&value),
            "the generator made {value} for {}, which its schema refuses",
            parameter.name
        );
        let text = text_of(&value)?;
        // URL parsers remove "." and ".." path segments (RFC 3986 §5.2.4,
        // percent-encoded or not): such an id cannot be put in a path, so
        // a request for it reaches another route.
        let text = if parameter.location == Location::Path && (text == "." || text == "..") {
            "dot-segment".to_owned()
        } else {
            text
        };
        request.set(parameter, text);
    }
    if let Some(body) = &operation.body {
        let mut value = schemas.valid(runner, &body.schema)?;
        let memberships = request
            .segments()
            .last()
            .is_some_and(|kind| kind == "memberships");
        arrange_ranges(&mut value, memberships);
        ensure!(
            body.validator.is_valid(&value),
            "the generator made the body {value}, which its schema refuses"
        );
        request.body = Some(value);
    }
    Ok(request)
}

/// Where a forbidden request breaks the document.
#[derive(Debug, Clone, Copy)]
enum Breach {
    /// A query parameter the operation does not declare ("Unknown query
    /// parameters are rejected with 400", the document says).
    UnknownParameter,
    /// A value the schema of the operation's parameter at this index
    /// refuses.
    Parameter(usize),
    /// A body its schema refuses.
    Body,
}

/// A valid request changed in one place so that the document forbids it,
/// and what that place is; `None` if no such change turned up.
fn invalid_request(
    schemas: &Schemas,
    runner: &mut TestRunner,
    operation: &Operation,
) -> anyhow::Result<Option<(Request, String)>> {
    let mut request = valid_request(schemas, runner, operation)?;
    let mut breaches = vec![Breach::UnknownParameter];
    breaches.extend((0..operation.parameters.len()).map(Breach::Parameter));
    if operation.body.is_some() {
        // A body has many more places to break than a parameter.
        breaches.extend([Breach::Body; 4]);
    }
    let breached = match sample(runner, prop::sample::select(breaches))? {
        Breach::UnknownParameter => {
            let name = format!("x_{}", sample(runner, "[a-z]{1,8}")?);
            let value = sample(runner, "[a-z0-9]{0,6}")?;
            request.query.push((name.clone(), value));
            Some(format!("unknown query parameter `{name}`"))
        }
        Breach::Parameter(index) => {
            let parameter = &operation.parameters[index];
            breach_parameter(schemas, runner, parameter, &mut request)?
        }
        Breach::Body => {
            let body = operation.body.as_ref().context("a body")?;
            breach_body(schemas, runner, body, &mut request)?
        }
    };
    Ok(breached.map(|place| (request, place)))
}

/// Gives `parameter` a value its schema refuses; what was changed, if a
/// value turned up.
fn breach_parameter(
    schemas: &Schemas,
    runner: &mut TestRunner,
    parameter: &Parameter,
    request: &mut Request,
) -> anyhow::Result<Option<String>> {
    let refuses = |value: &Value| !parameter.validator.is_valid(value);
    let Some(text) = schemas.invalid_text(runner, &parameter.schema, refuses)? else {
        return Ok(None);
    };
    // An empty or dot segment changes the route, not the parameter.
    if parameter.location == Location::Path && ["", ".", ".."].contains(&text.as_str()) {
        return Ok(None);
    }
    request.set(parameter, text);
    Ok(Some(format!(
        "{:?} parameter `{}`",
        parameter.location, parameter.name
    )))
}

/// Replaces the request's body with one its schema refuses; what was
/// changed, if such a body turned up.
fn breach_body(
    schemas: &Schemas,
    runner: &mut TestRunner,
    body: &Body,
    request: &mut Request,
) -> anyhow::Result<Option<String>> {
    let valid = request.body.as_ref().context("a valid body")?;
    for _ in 0..20 {
        let mutated = schemas.mutated(runner, valid)?;
        if !body.validator.is_valid(&mutated) {
            request.body = Some(mutated);
            return Ok(Some("body".to_owned()));
        }
    }
    Ok(None)
}

/// The rules of a multi-range page's `ranges` that the document states in
/// prose, JSON Schema being unable to: in key order and disjoint, none
/// empty. The generated ranges are rebuilt from their bounds in key order
/// (byte-wise; memberships by group id, then user id): consecutive ranges
/// between them, open at the start if the first generated range was, open
/// at the end if the last was. Bodies without `ranges` are left alone.
fn arrange_ranges(body: &mut Value, memberships: bool) {
    let Some(ranges) = body.get("ranges").and_then(Value::as_array) else {
        return;
    };
    let is_open = |range: &Value, bound: &str| range.get(bound).is_none_or(Value::is_null);
    let open_start = ranges.first().is_some_and(|range| is_open(range, "after"));
    let open_end = ranges.last().is_some_and(|range| is_open(range, "until"));
    let key = |text: &String| -> (String, String) {
        match text.split_once(':') {
            Some((group, user)) if memberships => (group.to_owned(), user.to_owned()),
            _ => (text.clone(), String::new()),
        }
    };
    let mut bounds: Vec<String> = ranges
        .iter()
        .flat_map(|range| [&range["after"], &range["until"]])
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    bounds.sort_by_key(key);
    bounds.dedup();
    let mut arranged = Vec::new();
    if open_start {
        arranged.push(json!({"until": bounds.first()}));
    }
    for pair in bounds.windows(2) {
        arranged.push(json!({"after": pair[0], "until": pair[1]}));
    }
    if (open_end || arranged.is_empty())
        && let Some(last) = bounds.last()
    {
        arranged.push(json!({"after": last, "until": null}));
    }
    body["ranges"] = Value::Array(arranged);
}

/// Sends a request with the token; its status and JSON body.
async fn send(server: &Server, request: &Request) -> anyhow::Result<(u16, Value)> {
    // Encoded here: a URL library given a raw segment drops its tabs and
    // line breaks (as URL parsing does), and the server would see another id.
    let path: Vec<String> = request
        .segments()
        .iter()
        .map(|segment| urlencode(segment))
        .collect();
    let url = reqwest::Url::parse(&format!("{}/{}", server.base_url, path.join("/")))?;
    let mut builder = server
        .client
        .request(request.method.clone(), url)
        .bearer_auth(TOKEN)
        .query(&request.query);
    if let Some(body) = &request.body {
        builder = builder.json(body);
    }
    into_json(builder.send().await.context("send")?)
        .await
        .with_context(|| request.to_string())
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

/// The arranged ranges keep the prose rules the server checks: in key
/// order, disjoint, none empty, open ends kept.
#[test]
fn arranged_ranges_are_in_key_order_disjoint_and_not_empty() {
    let arranged = |ranges: Value, memberships: bool| {
        let mut body = json!({"ranges": ranges});
        arrange_ranges(&mut body, memberships);
        body["ranges"].clone()
    };
    assert_eq!(
        arranged(json!([{"after": "b", "until": "a"}, {"until": "c"}]), false),
        json!([{"after": "a", "until": "b"}, {"after": "b", "until": "c"}])
    );
    assert_eq!(
        arranged(
            json!([{"until": "b"}, {"after": "a", "until": null}]),
            false
        ),
        json!([{"until": "a"}, {"after": "a", "until": "b"}, {"after": "b", "until": null}])
    );
    assert_eq!(arranged(json!([{}, {}]), false), json!([{"until": null}]));
    assert_eq!(
        arranged(json!([{"after": "a", "until": "a"}]), false),
        json!([{"after": "a", "until": null}])
    );
    // Memberships: by group id, then user id: group "a" before "a-b",
    // though the text "a-b:c" sorts before "a:z".
    let pair = json!([{"after": "a-b:c", "until": "a:z"}]);
    assert_eq!(
        arranged(pair.clone(), true),
        json!([{"after": "a:z", "until": "a-b:c"}])
    );
    assert_eq!(arranged(pair.clone(), false), pair);
}
