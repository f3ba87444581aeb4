//! `*` (any run, including none) and `?` (one character) globs, as IAM uses them.

/// Whether `text` matches `pattern`. Case-insensitive when `fold` (IAM action names are).
pub fn glob_match(pattern: &str, text: &str, fold: bool) -> bool {
    let norm = |s: &str| -> Vec<char> {
        if fold {
            s.to_lowercase().chars().collect()
        } else {
            s.chars().collect()
        }
    };
    let (p, t) = (norm(pattern), norm(text));
    // Iterative matching with backtracking to the last star: linear in practice, no recursion.
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
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
    while pi < p.len() && p[pi] == '*' {
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
    }
}
