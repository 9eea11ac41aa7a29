//! Mustache over JSON, as Cosmos renders Marathon templates (mustache.java with HTML escaping
//! off, values converted from JSON): `{{name}}` and dotted `{{a.b.c}}` look up through the
//! context stack; strings are written JSON-escaped without their quotes, so `"{{x}}"` in a
//! template stays valid JSON whatever `x` holds; integers as integers, other numbers as
//! doubles, booleans as `true`/`false`, null as nothing, arrays and objects as compact JSON.
//! `{{#s}}…{{/s}}` repeats over an array, pushes an object, renders once for any other truthy
//! value (everything but `false`, `null`, `""` and `[]`); `{{^s}}…{{/s}}` renders when the
//! value is falsy or missing. `{{{x}}}` and `{{& x}}` are the same as `{{x}}` (nothing is
//! HTML-escaped), `{{! comment}}` is dropped, `{{=<% %>=}}` changes delimiters.
//!
//! Why not a crate: the two Mustache crates on crates.io escape for HTML with no switch
//! (`mustache` 0.9) or keep a four-deep context stack (`ramhorns`); Cosmos's JSON escaping of
//! strings is the rule every Universe template relies on, so the renderer is this small module.

use serde_json::Value;

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed tag at byte {0}")]
    UnclosedTag(usize),
    #[error("section {{{{#{0}}}}} is never closed")]
    UnclosedSection(String),
    #[error("{{{{/{found}}}}} closes {{{{#{expected}}}}}")]
    MismatchedClose { expected: String, found: String },
    #[error("{{{{/{0}}}}} closes no section")]
    StrayClose(String),
    #[error("bad delimiter change at byte {0}")]
    BadDelimiters(usize),
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Var(Vec<String>),
    Section {
        name: Vec<String>,
        inverted: bool,
        children: Vec<Node>,
    },
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

fn path(name: &str) -> Vec<String> {
    if name == "." {
        return Vec::new();
    }
    name.split('.').map(str::to_owned).collect()
}

impl Template {
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let (mut open, mut close) = ("{{".to_owned(), "}}".to_owned());
        // Stack of (section name, inverted, nodes before it).
        let mut stack: Vec<(String, bool, Vec<Node>)> = Vec::new();
        let mut nodes: Vec<Node> = Vec::new();
        let mut pos = 0;
        while pos < src.len() {
            let Some(start) = src[pos..].find(&open).map(|i| pos + i) else {
                nodes.push(Node::Text(src[pos..].to_owned()));
                break;
            };
            if start > pos {
                nodes.push(Node::Text(src[pos..start].to_owned()));
            }
            let inner_start = start + open.len();
            // Triple mustache: `{{{x}}}` ends with `}}}`.
            let triple = open == "{{" && src[inner_start..].starts_with('{');
            let end_delim = if triple { "}}}" } else { close.as_str() };
            let Some(end) = src[inner_start..].find(end_delim).map(|i| inner_start + i) else {
                return Err(TemplateError::UnclosedTag(start));
            };
            let raw = &src[inner_start..end];
            pos = end + end_delim.len();
            let tag = raw.trim();
            if triple {
                nodes.push(Node::Var(path(tag.trim_start_matches('{').trim())));
                continue;
            }
            let Some(sigil) = tag.chars().next() else {
                nodes.push(Node::Var(Vec::new()));
                continue;
            };
            let rest = tag[sigil.len_utf8()..].trim();
            match sigil {
                '!' => {}
                '#' | '^' => {
                    stack.push((rest.to_owned(), sigil == '^', std::mem::take(&mut nodes)));
                }
                '/' => {
                    let Some((name, inverted, before)) = stack.pop() else {
                        return Err(TemplateError::StrayClose(rest.to_owned()));
                    };
                    if name != rest {
                        return Err(TemplateError::MismatchedClose {
                            expected: name,
                            found: rest.to_owned(),
                        });
                    }
                    let children = std::mem::replace(&mut nodes, before);
                    nodes.push(Node::Section {
                        name: path(&name),
                        inverted,
                        children,
                    });
                }
                '&' => nodes.push(Node::Var(path(rest))),
                '=' => {
                    let spec = rest.strip_suffix('=').map(str::trim);
                    let mut parts = spec.into_iter().flat_map(str::split_whitespace);
                    match (parts.next(), parts.next(), parts.next()) {
                        (Some(o), Some(c), None) => {
                            open = o.to_owned();
                            close = c.to_owned();
                        }
                        _ => return Err(TemplateError::BadDelimiters(start)),
                    }
                }
                '>' => {} // partials: Universe templates have none
                _ => nodes.push(Node::Var(path(tag))),
            }
        }
        if let Some((name, _, _)) = stack.pop() {
            return Err(TemplateError::UnclosedSection(name));
        }
        Ok(Template { nodes })
    }

    /// Renders against `context`.
    pub fn render(&self, context: &Value) -> String {
        let mut out = String::new();
        let mut stack = vec![context];
        render_nodes(&self.nodes, &mut stack, &mut out);
        out
    }
}

fn lookup<'a>(stack: &[&'a Value], name: &[String]) -> Option<&'a Value> {
    let Some((first, rest)) = name.split_first() else {
        return stack.last().copied();
    };
    // The first segment is looked up from the innermost context outwards; the rest inside it.
    let base = stack.iter().rev().find_map(|ctx| ctx.get(first))?;
    rest.iter().try_fold(base, |v, k| v.get(k))
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => true,
    }
}

fn render_nodes<'a>(nodes: &'a [Node], stack: &mut Vec<&'a Value>, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Var(name) => {
                if let Some(v) = lookup(stack, name) {
                    write_value(v, out);
                }
            }
            Node::Section {
                name,
                inverted,
                children,
            } => {
                let v = lookup(stack, name);
                let on = v.is_some_and(truthy);
                if *inverted {
                    if !on {
                        render_nodes(children, stack, out);
                    }
                    continue;
                }
                let Some(v) = v.filter(|_| on) else { continue };
                match v {
                    Value::Array(items) => {
                        for item in items {
                            render_in(children, stack, item, out);
                        }
                    }
                    other => render_in(children, stack, other, out),
                }
            }
        }
    }
}

fn render_in<'a>(nodes: &'a [Node], stack: &mut Vec<&'a Value>, ctx: &'a Value, out: &mut String) {
    stack.push(ctx);
    render_nodes(nodes, stack, out);
    stack.pop();
}

fn write_value(v: &Value, out: &mut String) {
    match v {
        Value::Null => {}
        Value::String(s) => {
            let quoted = Value::String(s.clone()).to_string();
            out.push_str(&quoted[1..quoted.len() - 1]);
        }
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else if let Some(f) = n.as_f64() {
                // Java's Double.toString: integral doubles keep a `.0`.
                if f.fract() == 0.0 && f.abs() < 1e16 {
                    out.push_str(&format!("{f:.1}"));
                } else {
                    out.push_str(&f.to_string());
                }
            }
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Array(_) | Value::Object(_) => out.push_str(&v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, ctx: Value) -> String {
        Template::parse(t).unwrap().render(&ctx)
    }

    #[test]
    fn renders_like_cosmos() {
        let ctx = json!({
            "s": "a\"b\\c\n<&>", "i": 3, "f": 0.5, "whole": 2.0, "t": true, "n": null,
            "o": {"x": {"y": "deep"}, "e": ""}, "list": [{"v": 1}, {"v": 2}], "empty": [],
            "resource": {"assets": {"container": {"docker": {"img-1": "capstan/redis"}}}},
        });
        let cases = [
            (r#""{{s}}""#, r#""a\"b\\c\n<&>""#),
            ("{{i}} {{f}} {{whole}} {{t}} [{{n}}]", "3 0.5 2.0 true []"),
            ("{{o.x.y}}|{{o.missing.y}}|{{nope}}", "deep||"),
            ("{{#t}}yes{{/t}}{{^t}}no{{/t}}", "yes"),
            ("{{#n}}yes{{/n}}{{^n}}no{{/n}}", "no"),
            ("{{#o.e}}yes{{/o.e}}{{^o.e}}empty{{/o.e}}", "empty"),
            ("{{#list}}<{{v}}:{{i}}>{{/list}}", "<1:3><2:3>"),
            ("{{#empty}}x{{/empty}}{{^empty}}none{{/empty}}", "none"),
            ("{{#o.x}}{{y}}{{/o.x}}", "deep"),
            ("{{#list}}{{.}}{{/list}}", r#"{"v":1}{"v":2}"#),
            ("{{{s}}}|{{& i}}|{{! gone }}", r#"a\"b\\c\n<&>|3|"#),
            (
                "{{resource.assets.container.docker.img-1}}",
                "capstan/redis",
            ),
            ("{{=<% %>=}}<% i %>{{i}}", "3{{i}}"),
            ("{{ i }}", "3"),
        ];
        for (t, want) in cases {
            assert_eq!(r(t, ctx.clone()), want, "template {t}");
        }
    }

    #[test]
    fn malformed_templates_are_errors() {
        let cases = [
            ("{{#a}}x", TemplateError::UnclosedSection("a".into())),
            (
                "{{#a}}{{/b}}",
                TemplateError::MismatchedClose {
                    expected: "a".into(),
                    found: "b".into(),
                },
            ),
            ("{{/a}}", TemplateError::StrayClose("a".into())),
            ("x {{a", TemplateError::UnclosedTag(2)),
        ];
        for (t, want) in cases {
            assert_eq!(Template::parse(t), Err(want), "template {t}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_string_renders_to_valid_json_inside_quotes(s in ".*") {
            let out = r(r#"{"v": "{{s}}"}"#, json!({"s": s.clone()}));
            let v: Value = serde_json::from_str(&out).unwrap();
            proptest::prop_assert_eq!(v["v"].as_str(), Some(s.as_str()));
        }
    }
}
