//! The dependency rules, read from `cargo metadata`: the runtime dependencies are the fixed
//! list, and env_logger (with what it pulls in) is compiled only for the `aim` command, behind
//! the `cli` feature, so a library user can leave it out.

use std::process::Command;

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn env_logger_is_an_optional_dependency_of_the_aim_command_only() {
    let meta = metadata();
    let package = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "aim")
        .unwrap();
    let runtime: Vec<(&str, bool)> = package["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"].is_null())
        .map(|d| {
            (
                d["name"].as_str().unwrap(),
                d["optional"].as_bool().unwrap(),
            )
        })
        .collect();
    let mut names: Vec<&str> = runtime.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "crossbeam-channel",
            "env_logger",
            "log",
            "nix",
            "parking_lot",
            "serde",
            "serde_json"
        ]
    );
    for (name, optional) in &runtime {
        assert_eq!(*optional, *name == "env_logger", "{name}");
    }
    let cli = package["features"]["cli"].as_array().unwrap();
    assert_eq!(cli, &[serde_json::json!("dep:env_logger")]);
    let aim_bin = package["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "aim" && t["kind"][0] == "bin")
        .unwrap();
    assert_eq!(aim_bin["required-features"][0], "cli", "{aim_bin}");
}
