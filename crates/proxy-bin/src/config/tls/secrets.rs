//! `static_resources.secrets[]`: TLS certificates and validation contexts named once and
//! referenced from TLS contexts by `tls_certificate_sds_secret_configs[].name` and
//! `validation_context_sds_secret_config.name` without an `sds_config` (Envoy's static SDS).
//! As in Envoy, the two kinds have separate names: a certificate and a validation context may
//! share a name, two certificates may not.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use super::{CommonTlsContext, TlsCertificate, ValidationContext};
use crate::config::de::{self, join};
use crate::config::{ConfigError, Errors};

/// `extensions.transport_sockets.tls.v3.Secret`, the kinds Baton reads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Secret {
    name: Option<String>,
    tls_certificate: Option<TlsCertificate>,
    validation_context: Option<ValidationContext>,
}

/// `SdsSecretConfig`: a secret by name, from `sds_config` or (without one) the static ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SdsSecretConfig {
    name: String,
    sds_config: Option<Value>,
}

/// The static secrets by kind and name, each with the path it was written at.
#[derive(Debug, Default)]
pub(crate) struct Secrets {
    certificates: HashMap<String, (String, TlsCertificate)>,
    validation_contexts: HashMap<String, (String, ValidationContext)>,
}

/// Where the parts of a TLS context taken from secrets were written: (field relative to the
/// `typed_config`, as `proxy_core::tls` names it; the secret's path).
pub(super) type Origins = Vec<(String, String)>;

/// `field` (relative to the `typed_config` at `tc_path`) as a full path, pointing into the
/// static secret it came from if it did.
pub(super) fn locate(tc_path: &str, origins: &Origins, field: &str) -> String {
    for (prefix, secret) in origins {
        if let Some(rest) = field.strip_prefix(prefix.as_str()) {
            return format!("{secret}{rest}");
        }
    }
    join(tc_path, field)
}

/// Reads `static_resources.secrets`; records errors for the entries that are wrong.
pub(crate) fn secrets(values: Vec<Value>, errs: &mut Errors) -> Secrets {
    let mut out = Secrets::default();
    for (i, v) in values.into_iter().enumerate() {
        let path = format!("static_resources.secrets[{i}]");
        let Some(s) = errs.take(de::decode::<Secret>(v, &path)) else {
            continue;
        };
        let name = s.name.unwrap_or_default();
        if name.is_empty() {
            errs.push(join(&path, "name"), "a static secret needs a name");
            continue;
        }
        let taken = match (s.tls_certificate, s.validation_context) {
            (Some(c), None) => {
                let p = join(&path, "tls_certificate");
                let chain =
                    super::source(c.certificate_chain.clone(), &join(&p, "certificate_chain"));
                let key = super::source(c.private_key.clone(), &join(&p, "private_key"));
                if errs.take(chain).is_none() | errs.take(key).is_none() {
                    continue;
                }
                out.certificates.insert(name.clone(), (p, c)).is_some()
            }
            (None, Some(v)) => {
                let p = join(&path, "validation_context");
                if let Some(ca) = &v.trusted_ca {
                    let ca = super::source(Some(ca.clone()), &join(&p, "trusted_ca"));
                    if errs.take(ca).is_none() {
                        continue;
                    }
                }
                out.validation_contexts
                    .insert(name.clone(), (p, v))
                    .is_some()
            }
            _ => {
                errs.push(
                    path,
                    "a static secret needs exactly one of `tls_certificate` and `validation_context`",
                );
                continue;
            }
        };
        if taken {
            errs.push(
                join(&path, "name"),
                format!("duplicate static secret name `{name}` (for this kind of secret)"),
            );
        }
    }
    out
}

impl Secrets {
    /// Moves the secrets `raw` (at `path`) names into it, as if written inline, checking each
    /// reference; says where they came from.
    pub(super) fn resolve(
        &self,
        raw: &mut CommonTlsContext,
        path: &str,
    ) -> Result<Origins, ConfigError> {
        let mut origins = Origins::new();
        let refs = std::mem::take(&mut raw.tls_certificate_sds_secret_configs);
        for (i, r) in refs.into_iter().enumerate() {
            let p = format!("{path}.tls_certificate_sds_secret_configs[{i}]");
            let name = static_name(r, &p)?;
            let (at, cert) = self.certificates.get(&name).ok_or_else(|| {
                ConfigError::new(
                    join(&p, "name"),
                    format!("unknown static secret `{name}`: no static_resources.secrets entry with a tls_certificate has this name"),
                )
            })?;
            let field = format!(
                "common_tls_context.tls_certificates[{}]",
                raw.tls_certificates.len()
            );
            origins.push((field, at.clone()));
            raw.tls_certificates.push(cert.clone());
        }
        if let Some(r) = raw.validation_context_sds_secret_config.take() {
            let p = join(path, "validation_context_sds_secret_config");
            if raw.validation_context.is_some() {
                return Err(ConfigError::new(
                    p,
                    "give either `validation_context` or `validation_context_sds_secret_config`, not both",
                ));
            }
            let name = static_name(r, &p)?;
            let (at, ctx) = self.validation_contexts.get(&name).ok_or_else(|| {
                ConfigError::new(
                    join(&p, "name"),
                    format!("unknown static certificate validation context `{name}`: no static_resources.secrets entry with a validation_context has this name"),
                )
            })?;
            origins.push((
                "common_tls_context.validation_context".to_owned(),
                at.clone(),
            ));
            raw.validation_context = Some(ctx.clone());
        }
        Ok(origins)
    }
}

/// The name of a static secret reference; one with an `sds_config` is refused.
fn static_name(r: SdsSecretConfig, path: &str) -> Result<String, ConfigError> {
    if r.sds_config.is_some() {
        return Err(ConfigError::new(
            join(path, "sds_config"),
            "unsupported: Baton has no SDS client; omit sds_config to use the static_resources.secrets entry of this name",
        ));
    }
    if r.name.is_empty() {
        return Err(ConfigError::new(join(path, "name"), "must not be empty"));
    }
    Ok(r.name)
}
