//! Parsing of the read routes' parameters.

use super::*;

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

fn key(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|part| (*part).to_owned()).collect()
}

#[test]
fn defaults_and_bounds() {
    let model = Model::default_model();
    let user = model.kind("user").expect("user");
    let params = parse_page_params(&[], user).expect("defaults");
    assert_eq!(params.limit, DEFAULT_PAGE_LIMIT);
    assert_eq!(params.after, None);
    for bad in ["0", "10001", "abc", "-1", ""] {
        let error =
            parse_page_params(&pairs(&[("limit", bad)]), user).expect_err("bad limit must fail");
        assert!(error.to_string().contains("`limit`"), "{error}");
    }
    let params = parse_page_params(&pairs(&[("limit", "10000")]), user).expect("max");
    assert_eq!(params.limit, 10_000);
}

#[test]
fn names_bad_parameters() {
    let model = Model::default_model();
    let user = model.kind("user").expect("user");
    let membership = model.kind("membership").expect("membership");
    let error = parse_page_params(&pairs(&[("offset", "5")]), user).expect_err("unknown");
    assert!(error.to_string().contains("`offset`"));
    let error = parse_page_params(&pairs(&[("after", "g1")]), membership)
        .expect_err("membership cursor needs a colon");
    assert!(error.to_string().contains("`after`"));
    let error =
        parse_page_params(&pairs(&[("limit", "1"), ("limit", "2")]), user).expect_err("repeated");
    assert!(error.to_string().contains("more than once"));
    let params = parse_page_params(&pairs(&[("after", "g:u")]), membership).expect("ok");
    assert_eq!(params.after, Some(key(&["g", "u"])));
}

#[test]
fn integral_numbers_are_integers() {
    // JSON Schema's `integer` (the contract's type of `limit` and
    // `buckets`) is any number with a zero fractional part.
    let model = Model::default_model();
    let user = model.kind("user").expect("user");
    for (text, limit) in [("1922.0", 1922), ("1.922e3", 1922), ("10000.00", 10_000)] {
        let params = parse_page_params(&pairs(&[("limit", text)]), user).expect("integral");
        assert_eq!(params.limit, limit, "{text}");
    }
    for bad in ["1922.5", "1e5", "NaN", "inf", "-1.0"] {
        let error = parse_page_params(&pairs(&[("limit", bad)]), user)
            .expect_err("not an integer in range");
        assert!(error.to_string().contains("`limit`"), "{error}");
    }
    let params =
        parse_digest_params(&pairs(&[("buckets", "16.0")]), user).expect("integral buckets");
    assert_eq!(params.buckets, 16);
}

#[test]
fn digest_parameters_are_checked_by_name() {
    let model = Model::default_model();
    let user = model.kind("user").expect("user");
    let membership = model.kind("membership").expect("membership");
    let params = parse_digest_params(
        &pairs(&[("after", "g:u"), ("until", "h:v"), ("buckets", "16")]),
        membership,
    )
    .expect("ok");
    assert_eq!(params.span.after, Some(key(&["g", "u"])));
    assert_eq!(params.span.until, Some(key(&["h", "v"])));
    assert_eq!(params.buckets, 16);
    assert_eq!(parse_digest_params(&[], user).expect("defaults").buckets, 1);
    for (bad, named) in [
        (pairs(&[("until", "g")]), "`until`"),
        (pairs(&[("buckets", "x")]), "`buckets`"),
        (pairs(&[("limit", "5")]), "`limit`"),
        (
            pairs(&[("after", "a:1"), ("after", "b:2")]),
            "more than once",
        ),
    ] {
        let error = parse_digest_params(&bad, membership).expect_err("must fail");
        assert!(error.to_string().contains(named), "{error}");
    }
}

#[test]
fn a_composite_cursor_splits_at_its_first_colons() {
    let schema = recon_core::schema::Schema::parse(include_str!(
        "../../../../../proto/schemas/catalog.toml"
    ))
    .expect("valid");
    let model = Model::new(schema).expect("served");
    let variant = model.kind("variants").expect("variant");
    let params = parse_page_params(&pairs(&[("after", "SKU-1:v:2")]), variant).expect("ok");
    assert_eq!(params.after, Some(key(&["SKU-1", "v:2"])));
}
