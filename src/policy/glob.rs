//! `*` (any run, including none) and `?` (one character) globs, as IAM uses them.

/// Whether `text` matches `pattern`. Case-insensitive when `fold` (IAM action names are).
///
/// Runs on every rule for every call, so it allocates nothing for ASCII (every action,
/// ARN and parameter name is); other text is compared character by character.
pub fn glob_match(pattern: &str, text: &str, fold: bool) -> bool {
    if pattern == "*" {
        return true;
    }
    if pattern.is_ascii() && text.is_ascii() {
        let same = |a: &u8, b: &u8| {
            if fold {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        return matches(pattern.as_bytes(), text.as_bytes(), b'*', b'?', same);
    }
    let norm = |s: &str| -> Vec<char> {
        if fold {
            s.to_lowercase().chars().collect()
        } else {
            s.chars().collect()
        }
    };
    matches(&norm(pattern), &norm(text), '*', '?', |a, b| a == b)
}

/// Iterative matching with backtracking to the last star: linear in practice, no recursion.
fn matches<T: PartialEq>(p: &[T], t: &[T], many: T, one: T, same: impl Fn(&T, &T) -> bool) -> bool {
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && p[pi] != many && (p[pi] == one || same(&p[pi], &t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == many {
            star = Some(pi);
            pi += 1;
            mark = ti;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == many {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("rds:Delete*", "rds:DeleteDBInstance", true));
        assert!(glob_match("rds:delete*", "rds:DeleteDBInstance", true));
        assert!(!glob_match("rds:delete*", "rds:DeleteDBInstance", false));
        assert!(glob_match(
            "arn:aws:rds:*:*:db:prod-*",
            "arn:aws:rds:us-east-1:111111111111:db:prod-db",
            false
        ));
        assert!(!glob_match(
            "arn:aws:rds:*:*:db:prod-*",
            "arn:aws:rds:us-east-1:111111111111:db:staging-db",
            false
        ));
        assert!(glob_match("*", "", false));
        assert!(glob_match("a?c", "abc", false));
        assert!(!glob_match("a?c", "ac", false));
        assert!(glob_match("*a*b*c*", "xxaxxbxxcxx", false));
        assert!(!glob_match("*a*b*c", "xxaxxbxxcxx", false));
        // A literal `*` or `?` in the text is matched by the pattern's wildcards only.
        assert!(!glob_match("a", "*", false));
        assert!(glob_match("a?", "a*", false));
        // Non-ASCII text: the same rules, folded by Unicode case.
        assert!(glob_match("ÄB*", "äbc", true));
        assert!(!glob_match("ÄB*", "äbc", false));
        assert!(glob_match("é?", "éé", false));
    }
}
