//! The one org_slug rule used everywhere: `^[a-z0-9_]{3,50}$`.

/// Why a slug was refused; the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SlugError(pub String);

/// Checks an org slug. Upper case is refused (never silently lowered).
pub fn validate_org_slug(slug: &str) -> Result<(), SlugError> {
    let len = slug.chars().count();
    if !(3..=50).contains(&len) {
        return Err(SlugError(format!(
            "org_slug must be 3 to 50 characters long (got {len}); use lower-case letters, digits and underscores"
        )));
    }
    if slug.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(SlugError(format!(
            "org_slug {slug:?} contains upper-case letters; use lower case, e.g. {:?}",
            slug.to_ascii_lowercase()
        )));
    }
    if !slug
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(SlugError(
            "org_slug may contain only lower-case letters, digits and underscores (pattern ^[a-z0-9_]{3,50}$)"
                .to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule() {
        for ok in ["acme", "acme_corp_2", "a_b", &"a".repeat(50)] {
            assert!(validate_org_slug(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "Acme",
            "ACME",
            &"a".repeat(51),
            "../x",
            "a-b",
            "a b",
            "a'; DROP TABLE x;--",
            "",
            "ac\u{e9}",
        ] {
            assert!(validate_org_slug(bad).is_err(), "{bad}");
        }
        assert!(validate_org_slug("Acme")
            .unwrap_err()
            .0
            .contains("upper-case"));
    }
}
