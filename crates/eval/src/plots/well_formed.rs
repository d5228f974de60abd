//! Test support: a minimal XML well-formedness check for the charts' output.

/// Minimal XML well-formedness check: one root element, balanced and
/// properly nested tags, quoted unique attributes, only the five
/// predefined entities or character references, and no raw `<` or `&`
/// in text or attribute values.
fn check_well_formed(doc: &str) -> Result<(), String> {
    let b = doc.as_bytes();
    let mut i = 0;
    let mut stack: Vec<&str> = Vec::new();
    let mut roots = 0;
    let is_name = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b':' | b'-' | b'.');
    let check_text = |text: &str| -> Result<(), String> {
        let mut rest = text;
        while let Some(p) = rest.find('&') {
            let after = &rest[p + 1..];
            let end = after.find(';').ok_or("unterminated entity")?;
            let ent = &after[..end];
            let ok = matches!(ent, "amp" | "lt" | "gt" | "quot" | "apos")
                || ent
                    .strip_prefix('#')
                    .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
            if !ok {
                return Err(format!("bad entity &{ent};"));
            }
            rest = &after[end + 1..];
        }
        if text.contains('<') {
            return Err("raw '<'".into());
        }
        Ok(())
    };
    while i < b.len() {
        if b[i] != b'<' {
            let end = doc[i..].find('<').map_or(b.len(), |p| i + p);
            let text = &doc[i..end];
            if stack.is_empty() && !text.trim().is_empty() {
                return Err(format!("text outside root: {text:?}"));
            }
            check_text(text)?;
            i = end;
            continue;
        }
        if doc[i..].starts_with("<!--") {
            i += doc[i..].find("-->").ok_or("unterminated comment")? + 3;
            continue;
        }
        let closing = b.get(i + 1) == Some(&b'/');
        i += if closing { 2 } else { 1 };
        let start = i;
        while i < b.len() && is_name(b[i]) {
            i += 1;
        }
        let name = &doc[start..i];
        if name.is_empty() {
            return Err(format!("empty tag name at {start}"));
        }
        if closing {
            if b.get(i) != Some(&b'>') {
                return Err(format!("junk in </{name}"));
            }
            i += 1;
            if stack.pop() != Some(name) {
                return Err(format!("mismatched </{name}>"));
            }
            continue;
        }
        if stack.is_empty() {
            roots += 1;
        }
        let mut attrs: Vec<&str> = Vec::new();
        loop {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            match b.get(i) {
                None => return Err("unterminated tag".into()),
                Some(b'>') => {
                    i += 1;
                    stack.push(name);
                    break;
                }
                Some(b'/') if b.get(i + 1) == Some(&b'>') => {
                    i += 2;
                    break;
                }
                Some(_) => {
                    let a = i;
                    while i < b.len() && is_name(b[i]) {
                        i += 1;
                    }
                    let attr = &doc[a..i];
                    if attr.is_empty() || b.get(i) != Some(&b'=') {
                        return Err(format!("bad attribute in <{name}> at {a}"));
                    }
                    if attrs.contains(&attr) {
                        return Err(format!("duplicate attribute {attr}"));
                    }
                    attrs.push(attr);
                    let quote = *b.get(i + 1).ok_or("eof")?;
                    if quote != b'"' && quote != b'\'' {
                        return Err(format!("unquoted attribute {attr}"));
                    }
                    let v0 = i + 2;
                    let len = doc[v0..].find(quote as char).ok_or("unterminated attribute")?;
                    check_text(&doc[v0..v0 + len])?;
                    i = v0 + len + 1;
                }
            }
        }
    }
    if !stack.is_empty() {
        return Err(format!("unclosed tags {stack:?}"));
    }
    if roots != 1 {
        return Err(format!("{roots} root elements"));
    }
    Ok(())
}

#[track_caller]
pub(super) fn assert_valid(doc: &str) {
    if let Err(e) = check_well_formed(doc) {
        panic!("not well-formed: {e}\n{doc}");
    }
    assert!(doc.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(!doc.contains("NaN"), "NaN in output:\n{doc}");
    assert!(!doc.contains("inf"), "inf in output:\n{doc}");
}

#[test]
fn checker_rejects_malformed_documents() {
    assert!(check_well_formed("<a><b></a></b>").is_err());
    assert!(check_well_formed("<a x=1/>").is_err());
    assert!(check_well_formed("<a>x & y</a>").is_err());
    assert!(check_well_formed("<a>x < y</a>").is_err());
    assert!(check_well_formed("<a x=\"<\"/>").is_err());
    assert!(check_well_formed("<a/><b/>").is_err());
    assert!(check_well_formed("<a x=\"1\" x=\"2\"/>").is_err());
    assert!(check_well_formed("<a>").is_err());
    assert!(check_well_formed("<a x='1'>&amp;&#38;<!-- c --><b/></a>").is_ok());
}
