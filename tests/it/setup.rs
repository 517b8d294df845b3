//! Getting keygate onto a machine as the README says: `make install` puts `keygate` on
//! PATH before the README's first `keygate` line.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).unwrap()
}

#[test]
fn make_install_runs_cargo_install_locked_and_the_readme_says_it_first() {
    let out = Command::new("make")
        .args(["-n", "install"])
        .env_remove("CARGO") // cargo test sets it; a user's shell does not
        .current_dir(root())
        .output()
        .expect("make is installed");
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        plan.lines()
            .any(|l| l.trim() == "cargo install --path . --locked"),
        "make install runs `cargo install --path . --locked`: {plan}"
    );
    let out = Command::new("make")
        .args(["-n", "install", "PREFIX=/opt/kg"])
        .env_remove("CARGO")
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("--root /opt/kg"),
        "PREFIX picks the root"
    );
    // The quickstart installs before it runs `keygate`.
    let text = readme();
    let install = text
        .find("\nmake install")
        .expect("the README says `make install`");
    let first_keygate = text.find("\nkeygate ").expect("the README runs keygate");
    assert!(
        install < first_keygate,
        "`make install` comes before the first `keygate` line"
    );
}
