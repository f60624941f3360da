//! Input rules shared by both services: the one org_slug rule `^[a-z0-9_]{3,50}$`, and email.

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

/// Checks an email address: one `@`, a non-empty local part, a dotted domain, no spaces,
/// at most 254 characters.
pub fn validate_email(email: &str) -> Result<(), String> {
    let problem = || {
        Err(format!(
            "{email:?} is not a valid email address (expected name@example.com)"
        ))
    };
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return problem();
    }
    let Some((local, domain)) = email.split_once('@') else {
        return problem();
    };
    if local.is_empty() || local.len() > 64 || domain.contains('@') {
        return problem();
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let labels_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !labels_ok {
        return problem();
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
        assert!(validate_org_slug("Acme").unwrap_err().0.contains("upper-case"));
    }

    #[test]
    fn emails() {
        for ok in ["a@b.co", "first.last+tag@sub.example.com"] {
            assert!(validate_email(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "a@b",
            "@b.com",
            "a@@b.com",
            "a b@c.com",
            "a@-b.com",
            "a@b..com",
            "a@b.com\n",
        ] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
    }
}
