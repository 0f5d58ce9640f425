use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use gridprobe_config::credential::{Credential as Spec, CredentialKind, FileSpec};
use gridprobe_config::Span;

use super::*;

fn jwt(exp: u64) -> String {
    let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.{}",
        b(r#"{"alg":"RS256"}"#),
        b(&format!(r#"{{"sub":"robot","exp":{exp}}}"#)),
        b("signature")
    )
}

fn file_credential(path: &Path) -> Arc<Credential> {
    let spec = Spec {
        name: "watched".into(),
        kind: CredentialKind::File(FileSpec {
            path: path.to_path_buf(),
            check_interval: Duration::from_secs(7),
        }),
        retry_max: Duration::from_secs(4),
        span: Span {
            file: 0,
            range: 0..0,
        },
    };
    Arc::new(Credential::new(spec, None, CancellationToken::new()))
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn jwt_expiry_is_read_without_verification() {
    let t = jwt(2_000_000_000);
    assert_eq!(
        file::jwt_expiry(&t),
        Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000))
    );
    assert_eq!(file::jwt_expiry("opaque-token"), None);
    assert_eq!(file::jwt_expiry("a.!!!.c"), None);
}

#[test]
fn pem_expiry_is_the_first_certificate_s() {
    let mut params = rcgen::CertificateParams::new(vec!["robot".into()]).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    let until = file::pem_not_after(pem.as_bytes()).unwrap();
    assert_eq!(unix(until), 1_900_000_000);
    assert!(file::pem_not_after(b"no pem here").is_err());
}

#[tokio::test]
async fn a_watched_token_file_is_valid_until_its_exp_then_unknown_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let c = file_credential(&path);
    // Missing: not obtained, with the reason; retried with backoff.
    let wait = c.refresh().await;
    assert_eq!(wait, Duration::from_secs(2));
    let why = c.unusable(SystemTime::now()).unwrap();
    assert!(
        why.starts_with("monitoring credential watched not yet obtained: "),
        "{why}"
    );
    assert!(why.contains("does not exist"), "{why}");
    assert_eq!(c.refresh().await, Duration::from_secs(4), "backoff doubles");
    assert_eq!(c.refresh().await, Duration::from_secs(4), "up to retry_max");

    let exp = unix(SystemTime::now()) + 3600;
    std::fs::write(&path, jwt(exp)).unwrap();
    assert_eq!(c.refresh().await, Duration::from_secs(7), "check_interval");
    assert_eq!(c.unusable(SystemTime::now()), None);
    let state = c.state();
    assert!(state.valid && state.last_error.is_none());
    assert_eq!(state.valid_until_ms, Some(exp as i64 * 1000));
    assert_eq!(state.renewal_failures, 3);
    match c.material() {
        Some(Material::Bearer { token, file }) => {
            assert_eq!(token.expose(), jwt(exp));
            assert_eq!(format!("{token:?}"), "***");
            assert_eq!(file.as_deref(), Some(path.as_path()));
        }
        other => panic!("{other:?}"),
    }
    // An hour later it has expired: the summary names the time.
    let later = SystemTime::now() + Duration::from_secs(7200);
    let why = c.unusable(later).unwrap();
    assert!(
        why.starts_with("monitoring credential watched expired at 20"),
        "{why}"
    );
    assert!(why.ends_with(" UTC"), "{why}");
}

#[tokio::test]
async fn a_token_about_to_expire_is_not_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let c = file_credential(&path);
    let now = SystemTime::now();
    // One minute left of what was read now: a sixth of it is the margin.
    std::fs::write(&path, jwt(unix(now) + 60)).unwrap();
    c.refresh().await;
    assert_eq!(c.unusable(now), None);
    let why = c.unusable(now + Duration::from_secs(55)).unwrap();
    assert!(why.contains("too soon to be used"), "{why}");
}

#[test]
fn private_files_are_written_atomically_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("vo.credentials");
    let p = write_private(&sub, "iam.token", b"secret").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"secret");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&p), 0o600);
    assert_eq!(mode(&sub), 0o700);
    write_private(&sub, "iam.token", b"renewed").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"renewed");
    assert_eq!(
        std::fs::read_dir(&sub).unwrap().count(),
        1,
        "no temporary left"
    );
}

#[tokio::test]
async fn a_reload_keeps_unchanged_credentials_and_drops_removed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, jwt(unix(SystemTime::now()) + 3600)).unwrap();
    let text = |extra: &str| {
        format!(
            "vo = \"t\"\n[[credential]]\nname = \"a\"\nkind = \"file\"\npath = \"{}\"\n{extra}",
            path.display()
        )
    };
    let load = |t: &str| gridprobe_config::load_str(&dir.path().join("vo.toml"), t).config;
    let creds = Credentials::for_config(&load(&text("")), None);
    creds.obtain_all().await;
    let a = creds.get("a").unwrap();
    assert!(a.state().valid);
    creds.configure(&load(&text(
        "[[credential]]\nname = \"b\"\nkind = \"file\"\npath = \"x\"\n",
    )));
    assert!(Arc::ptr_eq(&a, &creds.get("a").unwrap()), "state kept");
    assert!(!creds.get("b").unwrap().state().valid);
    creds.configure(&load("vo = \"t\"\n"));
    assert!(creds.list().is_empty());
    assert!(a.stop.is_cancelled(), "removed credentials stop renewing");
}
