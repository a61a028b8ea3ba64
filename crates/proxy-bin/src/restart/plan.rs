//! The restart plan: how this generation relates to the rest of its chain, decided once from
//! the command line ([`RestartPlan::from_options`]) and passed down to every step that opens
//! the stats region, names a restart socket or takes over from a parent.
//!
//! Two things are only known once the process looks at the host: the epoch of a
//! `--hot-restart-file` chain (one past the newest live generation in its region) and the base
//! id picked by `--use-dynamic-base-id`. They make a [`Place`], the plan's answer for this
//! process.

use std::path::PathBuf;

use hotrestart_rpc::Endpoint;
use shm_stats::Backing;

use crate::cli::{self, Options, DEFAULT_SOCKET_PATH};

/// How this generation takes part in a restart chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestartPlan {
    /// `--disable-hot-restart`: stats in process memory, no restart socket, no parent, no
    /// connection hand-over. The base id is only shown (`/server_info`); the epoch is 0 (the
    /// command line refuses another).
    Disabled { base_id: u32 },
    /// `--restart-epoch K` over `--base-id`: the region `/dev/shm/baton_<id>`, one restart
    /// socket per epoch.
    EpochChain {
        chain: Chain,
        epoch: u32,
        sockets: SocketNaming,
    },
    /// `--hot-restart-file PATH`: the newest generation listens on PATH, stats live in
    /// `PATH.stats`, and the epoch comes from the region.
    HotRestartFile {
        chain: Chain,
        file: PathBuf,
        socket_mode: u32,
    },
}

/// What every hot-restartable plan shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub base_id: BaseId,
    /// Where the base id in use is written (`--base-id-path`), fixed or picked.
    pub base_id_path: Option<PathBuf>,
    pub no_parent: NoParent,
    pub handover: ConnectionHandover,
    /// `--max-stats`: the region's capacity in stats.
    pub max_stats: u64,
    /// `--max-obj-name-len`: the longest name the region holds.
    pub max_obj_name_len: u64,
}

/// `--base-id` and `--use-dynamic-base-id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaseId {
    /// This id.
    Fixed(u32),
    /// The first free id from this one on.
    Dynamic { from: u32 },
}

/// What an epoch past 0 does when its parent is not there (`--skip-hot-restart-on-no-parent`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoParent {
    Fail,
    StartCold,
}

/// Whether live connections move to the next generation on a restart
/// (`--disable-connection-handover` turns it off; so does `--disable-hot-restart`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionHandover {
    Enabled,
    Disabled,
}

/// How the per-epoch restart sockets of an epoch chain are named (`--socket-path`,
/// `--socket-mode`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketNaming {
    /// Abstract `baton_hotrestart_<base id>_<epoch>`.
    Default,
    /// Abstract `<name>_<base id>_<epoch>` (`--socket-path @name`).
    Abstract(String),
    /// The file `<prefix>_<base id>_<epoch>` with `mode`.
    Path { prefix: PathBuf, mode: u32 },
}

/// This process's answer to its plan: its epoch and the base id it uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub epoch: u32,
    pub base_id: u32,
}

// === impl RestartPlan ===

impl RestartPlan {
    /// The plan the command line asks for.
    pub fn from_options(opts: &Options) -> Self {
        if opts.disable_hot_restart {
            return RestartPlan::Disabled {
                base_id: opts.base_id,
            };
        }
        let chain = Chain {
            base_id: if opts.use_dynamic_base_id {
                BaseId::Dynamic { from: opts.base_id }
            } else {
                BaseId::Fixed(opts.base_id)
            },
            base_id_path: opts.base_id_path.clone(),
            no_parent: if opts.skip_hot_restart_on_no_parent {
                NoParent::StartCold
            } else {
                NoParent::Fail
            },
            handover: if opts.disable_connection_handover {
                ConnectionHandover::Disabled
            } else {
                ConnectionHandover::Enabled
            },
            max_stats: opts.max_stats,
            max_obj_name_len: opts.max_obj_name_len,
        };
        match &opts.hot_restart_file {
            Some(file) => RestartPlan::HotRestartFile {
                chain,
                file: file.clone(),
                socket_mode: opts.socket_mode,
            },
            None => RestartPlan::EpochChain {
                chain,
                epoch: opts.restart_epoch,
                sockets: SocketNaming::from_options(opts),
            },
        }
    }

    /// The chain's options; `None` without hot restart.
    pub fn chain(&self) -> Option<&Chain> {
        match self {
            RestartPlan::Disabled { .. } => None,
            RestartPlan::EpochChain { chain, .. } | RestartPlan::HotRestartFile { chain, .. } => {
                Some(chain)
            }
        }
    }

    /// The epoch the command line gives; `None` when it comes from the chain's region
    /// (`--hot-restart-file`).
    pub fn given_epoch(&self) -> Option<u32> {
        match self {
            RestartPlan::Disabled { .. } => Some(0),
            RestartPlan::EpochChain { epoch, .. } => Some(*epoch),
            RestartPlan::HotRestartFile { .. } => None,
        }
    }

    /// The base id to start from (the one given, or where a dynamic search starts).
    pub fn requested_base_id(&self) -> u32 {
        match self {
            RestartPlan::Disabled { base_id } => *base_id,
            RestartPlan::EpochChain { chain, .. } | RestartPlan::HotRestartFile { chain, .. } => {
                match chain.base_id {
                    BaseId::Fixed(id) | BaseId::Dynamic { from: id } => id,
                }
            }
        }
    }

    /// Where the chain's stats live for `base_id`: `/dev/shm/baton_<base-id>`, or beside the
    /// `--hot-restart-file` socket (`<file>.stats`); `None` without hot restart (process memory).
    pub fn stats_backing(&self, base_id: u32) -> Option<Backing> {
        match self {
            RestartPlan::Disabled { .. } => None,
            RestartPlan::EpochChain { .. } => Some(Backing::for_base_id(base_id)),
            RestartPlan::HotRestartFile { file, .. } => {
                let mut path = file.clone().into_os_string();
                path.push(".stats");
                Some(Backing::File(path.into()))
            }
        }
    }

    /// The restart socket of generation `epoch` of the chain `base_id`; `None` without hot
    /// restart.
    pub fn endpoint(&self, base_id: u32, epoch: u32) -> Option<Endpoint> {
        let base_id = u64::from(base_id);
        match self {
            RestartPlan::Disabled { .. } => None,
            // One socket for the whole chain: the newest generation listens on it.
            RestartPlan::HotRestartFile {
                file, socket_mode, ..
            } => Some(Endpoint::path(file.clone(), Some(*socket_mode))),
            RestartPlan::EpochChain { sockets, .. } => Some(match sockets {
                SocketNaming::Default => Endpoint::for_epoch(base_id, epoch),
                SocketNaming::Abstract(name) => {
                    Endpoint::Abstract(format!("{name}_{base_id}_{epoch}").into_bytes())
                }
                SocketNaming::Path { prefix, mode } => {
                    Endpoint::path_for_epoch(prefix, base_id, epoch, Some(*mode))
                }
            }),
        }
    }

    /// A new generation binds its restart socket beside its parent's and renames it over
    /// (the one `--hot-restart-file` path), rather than at a name of its own.
    pub fn replaces_parent_socket(&self) -> bool {
        matches!(self, RestartPlan::HotRestartFile { .. })
    }

    /// The hot restart compatibility string, `"disabled"` without hot restart (as Envoy).
    pub fn hot_restart_version(&self) -> String {
        match self.chain() {
            None => "disabled".to_owned(),
            Some(c) => cli::hot_restart_version(c.max_stats, c.max_obj_name_len),
        }
    }

    /// Whether live connections move to the next generation on a restart.
    pub fn connection_handover(&self) -> ConnectionHandover {
        self.chain()
            .map_or(ConnectionHandover::Disabled, |c| c.handover)
    }

    /// What an epoch past 0 does without a parent.
    pub fn no_parent(&self) -> NoParent {
        self.chain().map_or(NoParent::Fail, |c| c.no_parent)
    }
}

// === impl SocketNaming ===

impl SocketNaming {
    fn from_options(opts: &Options) -> Self {
        if opts.socket_path == DEFAULT_SOCKET_PATH {
            SocketNaming::Default
        } else if let Some(name) = opts.socket_path.strip_prefix('@') {
            SocketNaming::Abstract(name.to_owned())
        } else {
            SocketNaming::Path {
                prefix: PathBuf::from(&opts.socket_path),
                mode: opts.socket_mode,
            }
        }
    }
}

// === impl ConnectionHandover ===

impl ConnectionHandover {
    pub fn is_enabled(self) -> bool {
        self == ConnectionHandover::Enabled
    }
}

// === impl Place ===

impl Place {
    /// The command line's values with this place's epoch and base id, as `/server_info`'s
    /// `command_line_options` shows them.
    pub fn command_line_options(&self, opts: &Options) -> serde_json::Value {
        let mut json = opts.to_json();
        json["base_id"] = self.base_id.to_string().into();
        json["restart_epoch"] = self.epoch.into();
        json
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;
    use crate::cli::{parse, Parsed};

    fn plan(args: &[&str]) -> RestartPlan {
        let args = ["baton", "--config-yaml", "{}"]
            .iter()
            .chain(args)
            .map(OsString::from);
        match parse(args) {
            Parsed::Run(opts) => RestartPlan::from_options(&opts),
            other => panic!("{other:?}"),
        }
    }

    fn chain(base_id: BaseId) -> Chain {
        Chain {
            base_id,
            base_id_path: None,
            no_parent: NoParent::Fail,
            handover: ConnectionHandover::Enabled,
            max_stats: cli::DEFAULT_MAX_STATS,
            max_obj_name_len: cli::DEFAULT_MAX_OBJ_NAME_LEN,
        }
    }

    #[test]
    fn the_command_line_decides_the_plan() {
        assert_eq!(
            plan(&[
                "--disable-hot-restart",
                "--base-id",
                "7",
                "--hot-restart-file",
                "/x"
            ]),
            RestartPlan::Disabled { base_id: 7 }
        );
        assert_eq!(
            plan(&["--base-id", "3", "--restart-epoch", "2"]),
            RestartPlan::EpochChain {
                chain: chain(BaseId::Fixed(3)),
                epoch: 2,
                sockets: SocketNaming::Default,
            }
        );
        let mut c = chain(BaseId::Dynamic { from: 5 });
        c.base_id_path = Some("/run/id".into());
        c.no_parent = NoParent::StartCold;
        c.handover = ConnectionHandover::Disabled;
        assert_eq!(
            plan(&[
                "--base-id",
                "5",
                "--use-dynamic-base-id",
                "--base-id-path",
                "/run/id",
                "--skip-hot-restart-on-no-parent",
                "--disable-connection-handover",
                "--socket-path",
                "@mine",
            ]),
            RestartPlan::EpochChain {
                chain: c,
                epoch: 0,
                sockets: SocketNaming::Abstract("mine".to_owned()),
            }
        );
        assert_eq!(
            plan(&["--hot-restart-file", "/run/b.sock", "--socket-mode", "640"]),
            RestartPlan::HotRestartFile {
                chain: chain(BaseId::Fixed(0)),
                file: "/run/b.sock".into(),
                socket_mode: 0o640,
            }
        );
    }

    #[test]
    fn plans_name_sockets_and_regions() {
        let disabled = plan(&["--disable-hot-restart"]);
        assert_eq!(disabled.endpoint(0, 0), None);
        assert_eq!(disabled.stats_backing(0), None);
        assert_eq!(disabled.hot_restart_version(), "disabled");
        assert_eq!(disabled.connection_handover(), ConnectionHandover::Disabled);
        assert_eq!(disabled.given_epoch(), Some(0));

        let default = plan(&["--restart-epoch", "4"]);
        assert_eq!(default.endpoint(9, 3), Some(Endpoint::for_epoch(9, 3)));
        assert_eq!(default.stats_backing(9), Some(Backing::for_base_id(9)));
        assert_eq!(default.given_epoch(), Some(4));
        assert!(!default.replaces_parent_socket());
        assert_eq!(
            default.hot_restart_version(),
            cli::hot_restart_version(cli::DEFAULT_MAX_STATS, cli::DEFAULT_MAX_OBJ_NAME_LEN)
        );

        let abstract_name = plan(&["--socket-path", "@edge"]);
        assert_eq!(
            abstract_name.endpoint(2, 1),
            Some(Endpoint::Abstract(b"edge_2_1".to_vec()))
        );
        let path = plan(&["--socket-path", "/run/baton", "--socket-mode", "644"]);
        assert_eq!(
            path.endpoint(2, 1),
            Some(Endpoint::path("/run/baton_2_1", Some(0o644)))
        );

        let file = plan(&["--hot-restart-file", "/run/b.sock"]);
        assert_eq!(
            file.endpoint(1, 5),
            Some(Endpoint::path("/run/b.sock", Some(0o600)))
        );
        assert_eq!(
            file.stats_backing(1),
            Some(Backing::File("/run/b.sock.stats".into()))
        );
        assert_eq!(file.given_epoch(), None);
        assert!(file.replaces_parent_socket());
    }

    #[test]
    fn the_place_shows_in_the_command_line_options() {
        let args = ["baton", "--config-yaml", "{}", "--use-dynamic-base-id"].map(OsString::from);
        let Parsed::Run(opts) = parse(args) else {
            panic!("expected options");
        };
        let json = Place {
            epoch: 2,
            base_id: 41,
        }
        .command_line_options(&opts);
        assert_eq!(json["base_id"], "41");
        assert_eq!(json["restart_epoch"], 2);
        assert_eq!(json["use_dynamic_base_id"], true);
    }
}
