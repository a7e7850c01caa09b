package io.clusterlvm.clvm.lvm;

import io.clusterlvm.clvm.lvm.LockRequirement.Scope;
import io.clusterlvm.dlm.client.LockMode;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * An lvm command line ({@code lvcreate -n vm-101-disk-1 -L 32G vg_shared}) and the cluster locks it
 * needs, worked out from the command line alone: no I/O, no lvm run, so the same answer holds
 * however the command arrives (the clvm wrapper today, lvmlockd's socket later).
 *
 * <p>The rules follow lvmlockd:
 *
 * <ul>
 *   <li>Global lock EX for commands that change the VG namespace or the PV set (pvcreate, pvremove,
 *       vgcreate, vgremove, vgextend, vgreduce, vgrename, pvchange, pvresize); PR for reports that
 *       have to list every VG or every PV.
 *   <li>VG lock EX for a metadata change, PR for a report or an (de)activation, which only reads
 *       the metadata.
 *   <li>LV lock: EX while an LV is active exclusively ({@code -ay}, {@code -aey}, {@code -aly}:
 *       with a cluster lock "local" activation is exclusive, as lvmlockd treats it), PR while
 *       active shared ({@code -asy}), kept after the command ({@link Scope#PERSISTENT_ACTIVATION});
 *       {@code -an} releases it ({@link Scope#RELEASE_ACTIVATION}); lvremove, lvextend/lvreduce and
 *       lvrename need it EX (the LV active on no other host).
 * </ul>
 *
 * <p>A command whose locks can't be known from its arguments is refused with {@link
 * UnsupportedLvmCommandException} rather than given a blanket plan. A too-weak guess can corrupt
 * the shared metadata (exactly what the uncoordinated control experiment shows); the only safe
 * blanket, global EX plus every VG EX plus every LV EX, would stall the whole cluster behind one
 * command and still could not express an activation that must outlive it (lvconvert, pvmove). An
 * operator gets a clear message naming the reason instead. This covers unknown subcommands, unknown
 * or abbreviated options, {@code --select} and {@code @tag} on commands that change something,
 * lvcreate without {@code --name}, and layouts with more than one LV behind one name (snapshots,
 * thin, cache, vdo).
 *
 * <p>Two more refusals are not about naming locks but about lvm acting outside them. Mirror and
 * RAID LVs ({@code --type mirror|raid*}, {@code --mirrors} other than 0, {@code --mirrorlog},
 * {@code --regionsize}, {@code --raidintegrity}) and {@code --monitor y}: dmeventd would repair or
 * extend monitored LVs on its own, writing the VG metadata without the cluster lock. And {@code
 * --config} and the profiles, on every command: they replace parts of the lvm.conf the agent relies
 * on (device filter, metadata and backup dirs, locking), so lvm would no longer see the VG the
 * agent locks.
 */
public final class LvmCommand {

  /** lvm's rule for VG and LV names (lib/misc/lvm-string.c): no leading '-', no "." / "..". */
  private static final Pattern NAME = Pattern.compile("[A-Za-z0-9+_.][A-Za-z0-9+_.-]*");

  /** Subcommands that touch no shared storage. */
  private static final Set<String> LOCAL_ONLY =
      Set.of(
          "version",
          "formats",
          "segtypes",
          "help",
          "lvmconfig",
          "config",
          "dumpconfig",
          "devtypes",
          "tags",
          "systemid");

  private static final Map<String, String> REFUSED =
      Map.ofEntries(
          Map.entry(
              "lvconvert",
              "it changes an LV's layout and may activate hidden sub-LVs; not coordinated yet"),
          Map.entry(
              "pvmove",
              "it moves extents through a temporary mirror LV that stays active on this host"),
          Map.entry("vgsplit", "it moves LVs, and with them their locks, to another lockspace"),
          Map.entry("vgmerge", "it moves LVs, and with them their locks, to another lockspace"),
          Map.entry("vgimport", "import/export hands a VG between clusters; do it outside clvm"),
          Map.entry("vgexport", "import/export hands a VG between clusters; do it outside clvm"),
          Map.entry(
              "vgimportclone", "import/export hands a VG between clusters; do it outside clvm"),
          Map.entry(
              "vgcfgrestore",
              "it overwrites VG metadata from a backup; run it with the VG inactive on every host"),
          Map.entry(
              "lvmdevices", "it edits this host's devices file only: run lvm directly for that"),
          Map.entry(
              "vgimportdevices",
              "it edits this host's devices file only: run lvm directly for that"),
          Map.entry("lvm", "give the lvm subcommand itself, e.g. 'clvm lvs'"));

  /**
   * lvchange/vgchange options that neither change metadata nor activation: with only these (and
   * --activate), the command reads the VG metadata (VG lock PR).
   */
  private static final Set<String> READ_ONLY_CHANGE_OPTIONS =
      Set.of(
          "activate",
          "activationmode",
          "autobackup",
          "debug",
          "devices",
          "devicesfile",
          "driverloaded",
          "force",
          "ignoreactivationskip",
          "ignorelockingfailure",
          "ignoremonitoring",
          "journal",
          "lockopt",
          "monitor",
          "nohints",
          "nolocking",
          "noudevsync",
          "partial",
          "poll",
          "quiet",
          "readonly",
          "refresh",
          "reportformat",
          "sysinit",
          "test",
          "verbose",
          "yes");

  /** lvcreate layouts that put more than one LV behind one name. */
  private static final Set<String> MULTI_LV_TYPES =
      Set.of(
          "snapshot",
          "thin",
          "thin-pool",
          "cache",
          "cache-pool",
          "vdo",
          "vdo-pool",
          "writecache",
          "integrity");

  private static final Set<String> MULTI_LV_OPTIONS =
      Set.of(
          "snapshot",
          "thin",
          "thinpool",
          "virtualsize",
          "cache",
          "cachepool",
          "cachevol",
          "vdo",
          "vdopool");

  /**
   * Options that swap in another configuration than the host's lvm.conf, for this run ({@code
   * --config}, {@code --commandprofile}, {@code --profile}) or for every later run on the VG
   * ({@code --metadataprofile}, stored in the VG metadata).
   */
  private static final Set<String> CONFIG_OPTIONS =
      Set.of("config", "commandprofile", "profile", "metadataprofile");

  /**
   * Options with which lvm exits 0 without doing what the command says ({@code --test}, {@code
   * --readonly}, {@code --driverloaded n}: activation becomes a no-op) or sees only some of the
   * VG's PVs ({@code --devices}, {@code --devicesfile}). The agent takes, keeps, moves or releases
   * locks by what the command says: a "deactivation" under {@code -t} would release the activation
   * lock of an LV still active here. The agent's own {@code --lvm-arg}s are not the client's.
   */
  private static final Map<String, String> MAKE_BELIEVE_OPTIONS =
      Map.of(
          "test", "lvm would only pretend",
          "readonly", "lvm would neither write nor activate",
          "driverloaded", "lvm would skip activation",
          "devices", "lvm would see only some PVs",
          "devicesfile", "lvm would see only some PVs");

  /** Commands that change nothing, where the options above are harmless. */
  private static final Set<String> REPORTS =
      Set.of(
          "lvs",
          "vgs",
          "pvs",
          "fullreport",
          "lvdisplay",
          "vgdisplay",
          "pvdisplay",
          "lvscan",
          "vgscan",
          "lvmdiskscan",
          "vgcfgbackup");

  /** Options that only mean something for mirror and RAID LVs. */
  private static final Set<String> MIRROR_OPTIONS =
      Set.of("mirrorlog", "regionsize", "raidintegrity");

  private static final String MIRROR_REFUSAL =
      "mirror and RAID LVs are not supported in a shared VG: dmeventd would repair them without the"
          + " cluster lock";

  private final String subcommand;
  private final List<String> args;
  private final LockPlan lockPlan;

  private LvmCommand(String subcommand, List<String> args, LockPlan lockPlan) {
    this.subcommand = subcommand;
    this.args = args;
    this.lockPlan = lockPlan;
  }

  /**
   * Classifies {@code lvm <subcommand> <args>}.
   *
   * @throws UnsupportedLvmCommandException if clvm cannot tell which locks make it safe
   */
  public static LvmCommand parse(String subcommand, List<String> args)
      throws UnsupportedLvmCommandException {
    Objects.requireNonNull(subcommand, "subcommand");
    List<String> argList = List.copyOf(args);
    return new LvmCommand(subcommand, argList, plan(subcommand, argList));
  }

  /** {@code argv[0]} is the subcommand: {@code parse("lvs", "-o", "lv_name")}. */
  public static LvmCommand parse(String... argv) throws UnsupportedLvmCommandException {
    if (argv.length == 0) {
      throw new IllegalArgumentException("empty command line");
    }
    return parse(argv[0], List.of(argv).subList(1, argv.length));
  }

  public String subcommand() {
    return subcommand;
  }

  public List<String> args() {
    return args;
  }

  /** Subcommand followed by its arguments, as lvm gets them. */
  public List<String> argv() {
    List<String> argv = new ArrayList<>(args.size() + 1);
    argv.add(subcommand);
    argv.addAll(args);
    return List.copyOf(argv);
  }

  public LockPlan lockPlan() {
    return lockPlan;
  }

  @Override
  public String toString() {
    return "lvm " + String.join(" ", argv()) + " " + lockPlan;
  }

  /**
   * lvmconfig's {@code --file} writes its output to a file, as root (the agent runs lvm): a client
   * could overwrite the agent's lvm.conf (hints, filter, autoactivation) or any file of the host.
   * These commands have no option table here, so the option is found by its spellings: {@code -f}
   * (alone or among bundled short options) and any prefix of {@code --file} lvm would accept.
   */
  private static void refuseOutputFile(String sub, List<String> args)
      throws UnsupportedLvmCommandException {
    if (!Set.of("lvmconfig", "config", "dumpconfig").contains(sub)) {
      return;
    }
    for (String arg : args) {
      if (arg.equals("--")) {
        return;
      }
      String name = arg.startsWith("--") ? arg.substring(2).split("=", 2)[0] : null;
      boolean file =
          name != null
              ? !name.isEmpty() && "file".startsWith(name)
              : arg.startsWith("-") && arg.length() > 1 && arg.indexOf('f') > 0;
      if (file) {
        throw new UnsupportedLvmCommandException(
            sub,
            arg
                + ": the agent runs lvm as root, so a client could write any file of this host;"
                + " its output comes back on stdout");
      }
    }
  }

  private static LockPlan plan(String sub, List<String> args)
      throws UnsupportedLvmCommandException {
    if (LOCAL_ONLY.contains(sub)) {
      refuseOutputFile(sub, args);
      return LockPlan.none();
    }
    String refusal = REFUSED.get(sub);
    if (refusal != null) {
      throw new UnsupportedLvmCommandException(sub, refusal);
    }
    if (!LvmArguments.knows(sub)) {
      throw new UnsupportedLvmCommandException(
          sub, "unknown lvm subcommand; clvm runs only commands whose cluster locks it can name");
    }
    LvmArguments a = LvmArguments.parse(sub, args);
    // Before the --help shortcut, so that these never reach lvm at all.
    refuseConfigOverrides(sub, a);
    refuseMirrorAndRaid(sub, a);
    requireOff(
        sub,
        a,
        "setautoactivation",
        "autoactivation (at boot, by udev or vgchange -aay) activates LVs without their cluster"
            + " locks");
    refuseMakeBelieve(sub, a);
    requireOff(
        sub,
        a,
        "poll",
        "lvm would finish a snapshot merge or a pvmove from the background (lvmpolld), writing"
            + " the VG's metadata after this command gave its cluster lock back");
    if (sub.equals("vgcfgbackup") && a.has("file")) {
      throw new UnsupportedLvmCommandException(
          sub,
          "--file: the agent runs lvm as root, so a client could write any file of this host;"
              + " backups go to lvm's backup directory");
    }
    if (a.has("help") || a.has("longhelp") || a.has("version")) {
      return LockPlan.none(); // lvm prints and exits
    }
    try {
      return switch (sub) {
        case "lvs", "vgs", "lvdisplay", "vgdisplay", "fullreport", "vgcfgbackup", "vgmknodes" ->
            readVolumeGroups(sub, a, LockMode.PR);
        case "vgck" ->
            readVolumeGroups(sub, a, a.has("updatemetadata") ? LockMode.EX : LockMode.PR);
        case "pvs", "pvdisplay", "lvscan", "vgscan" -> everything(LockMode.PR);
        case "pvscan" -> pvscan(sub, a);
        case "lvmdiskscan" -> LockPlan.builder().global(LockMode.PR).build();
        case "pvcreate", "pvremove" -> pvcreateRemove(sub, a);
        case "pvchange", "pvresize" -> changesUnknownVg(sub, a);
        case "vgcreate", "vgextend", "vgreduce" -> vgcreateExtendReduce(sub, a);
        case "vgremove" -> vgremove(sub, a);
        case "vgrename" -> vgrename(sub, a);
        case "vgchange" -> vgchange(sub, a);
        case "lvcreate" -> lvcreate(sub, a);
        case "lvremove" -> lvremove(sub, a);
        case "lvrename" -> lvrename(sub, a);
        case "lvextend", "lvreduce", "lvresize" -> lvresize(sub, a);
        case "lvchange" -> lvchange(sub, a);
        default -> throw new IllegalStateException("option table without a rule: " + sub);
      };
    } catch (IllegalArgumentException e) {
      // A name the lock model can't represent (too long, reserved).
      throw new UnsupportedLvmCommandException(sub, e.getMessage());
    }
  }

  /**
   * The agent locks the VG that its own lvm.conf shows (devices filter, metadata dir, backup dir)
   * and reads the seqno from the backup lvm writes there; a client's {@code --config} or profile
   * would have lvm read, write or skip something else, or change its locking settings.
   */
  private static void refuseConfigOverrides(String sub, LvmArguments a)
      throws UnsupportedLvmCommandException {
    for (String option : CONFIG_OPTIONS) {
      if (a.has(option)) {
        throw new UnsupportedLvmCommandException(
            sub,
            "--"
                + option
                + " is not accepted: the agent's lvm.conf is the cluster's; set it there");
      }
    }
  }

  /**
   * dmeventd repairs a mirror or RAID LV whose leg fails ({@code lvconvert --repair}) and
   * autoextends monitored thin pools and snapshots, on whichever host monitors the LV and without
   * any cluster lock: a metadata write under another host's VG lock. So no mirror/RAID LV is
   * created and nothing is monitored. Checked on every command with an option table, not only
   * lvcreate: the tables are shared, so an option lvm would reject for a command still parses here,
   * and lvconvert (refused outright for now) gets the check if it is ever let through. Every value
   * is checked, not only the last one lvm would use.
   */
  private static void refuseMirrorAndRaid(String sub, LvmArguments a)
      throws UnsupportedLvmCommandException {
    for (String type : a.values("type")) {
      String t = type.toLowerCase(Locale.ROOT);
      if (t.equals("mirror") || t.startsWith("raid")) {
        throw new UnsupportedLvmCommandException(sub, "--type " + type + ": " + MIRROR_REFUSAL);
      }
    }
    for (String mirrors : a.values("mirrors")) {
      if (!mirrors.equals("0")) {
        throw new UnsupportedLvmCommandException(
            sub, "--mirrors " + mirrors + ": " + MIRROR_REFUSAL);
      }
    }
    for (String option : MIRROR_OPTIONS) {
      if (a.has(option)) {
        throw new UnsupportedLvmCommandException(sub, "--" + option + ": " + MIRROR_REFUSAL);
      }
    }
    requireOff(
        sub,
        a,
        "monitor",
        "dmeventd would repair or extend monitored LVs without the cluster lock");
  }

  /** Refuses {@code --option} with any value but {@code n} (every value given, not the last). */
  private static void requireOff(String sub, LvmArguments a, String option, String why)
      throws UnsupportedLvmCommandException {
    for (String value : a.values(option)) {
      if (!value.equals("n")) {
        throw new UnsupportedLvmCommandException(
            sub, "--" + option + " " + value + ": " + why + "; use --" + option + " n");
      }
    }
  }

  /** See {@link #MAKE_BELIEVE_OPTIONS}. */
  private static void refuseMakeBelieve(String sub, LvmArguments a)
      throws UnsupportedLvmCommandException {
    if (REPORTS.contains(sub)) {
      return;
    }
    for (Map.Entry<String, String> option : MAKE_BELIEVE_OPTIONS.entrySet()) {
      if (a.has(option.getKey())) {
        throw new UnsupportedLvmCommandException(
            sub,
            "--"
                + option.getKey()
                + " is not accepted here: "
                + option.getValue()
                + ", while the agent takes or releases cluster locks as if it had done what the"
                + " command says");
      }
    }
  }

  /** Reports and checks naming VGs (or LVs in them); none named means every VG. */
  private static LockPlan readVolumeGroups(String sub, LvmArguments a, LockMode mode)
      throws UnsupportedLvmCommandException {
    List<String> named = a.positionals();
    if (named.isEmpty() || named.stream().anyMatch(p -> p.startsWith("@"))) {
      return everything(mode);
    }
    LockPlan.Builder plan = LockPlan.builder();
    for (String p : named) {
      plan.volumeGroup(reference(sub, p).vg(), mode);
    }
    return plan.build();
  }

  /** Global PR (the VG list and orphan PVs are read) and every VG at {@code vgMode}. */
  private static LockPlan everything(LockMode vgMode) {
    return LockPlan.builder().global(LockMode.PR).everyVolumeGroup(vgMode).build();
  }

  private static LockPlan pvscan(String sub, LvmArguments a) throws UnsupportedLvmCommandException {
    if (a.has("cache") || a.has("activate") || a.has("background")) {
      throw new UnsupportedLvmCommandException(
          sub,
          "pvscan --cache/--activate is host-local event autoactivation; it would activate LVs"
              + " without their cluster locks");
    }
    return everything(LockMode.PR);
  }

  /** pvchange/pvresize: which VG holds the PV is only known by reading the disks. */
  private static LockPlan changesUnknownVg(String sub, LvmArguments a)
      throws UnsupportedLvmCommandException {
    refuseSelection(sub, a);
    return LockPlan.builder().global(LockMode.EX).everyVolumeGroup(LockMode.EX).build();
  }

  /**
   * pvcreate and pvremove need only the global lock, except with {@code -ff}: then lvm re-labels or
   * wipes a PV that belongs to a VG, and another host's lvcreate, under that VG's lock only, could
   * be writing metadata to it meanwhile. Which VG it is, lvm finds out: so every VG, as pvchange.
   */
  private static LockPlan pvcreateRemove(String sub, LvmArguments a)
      throws UnsupportedLvmCommandException {
    if (a.values("force").size() >= 2) {
      return changesUnknownVg(sub, a);
    }
    return LockPlan.builder().global(LockMode.EX).build();
  }

  private static LockPlan vgcreateExtendReduce(String sub, LvmArguments a)
      throws UnsupportedLvmCommandException {
    if (a.has("removemissing")) {
      // lvm drops every LV with extents on a PV missing *on this host*; on a shared LUN another
      // host may still see that PV and run those LVs, whose extents would then be handed out again.
      throw new UnsupportedLvmCommandException(
          sub,
          "--removemissing removes the LVs on PVs this host does not see, which other hosts may"
              + " still see and use; restore the PV's path, or repair the VG with lvm directly"
              + " while no other host uses it");
    }
    String vg = volumeGroupName(sub, firstPositional(sub, a, "a VG name"));
    return LockPlan.builder().global(LockMode.EX).volumeGroup(vg, LockMode.EX).build();
  }

  /** vgremove also removes every LV: none may be active on another host. */
  private static LockPlan vgremove(String sub, LvmArguments a)
      throws UnsupportedLvmCommandException {
    refuseSelection(sub, a);
    if (a.positionals().isEmpty()) {
      throw new UnsupportedLvmCommandException(sub, "name the VG(s) to remove");
    }
    LockPlan.Builder plan = LockPlan.builder().global(LockMode.EX);
    for (String p : a.positionals()) {
      String vg = volumeGroupName(sub, p);
      plan.volumeGroup(vg, LockMode.EX)
          .everyLogicalVolume(vg, LockMode.EX, Scope.RELEASE_ACTIVATION);
    }
    return plan.build();
  }

  /**
   * LV locks live in lockspace lvm_<vg>, so a VG rename would strand activation locks held under
   * the old name: require every LV inactive on every host, this one included (EX on each).
   */
  private static LockPlan vgrename(String sub, LvmArguments a)
      throws UnsupportedLvmCommandException {
    if (a.positionals().size() != 2) {
      throw new UnsupportedLvmCommandException(sub, "expected: vgrename OLD NEW");
    }
    String from = stripDev(a.positionals().get(0));
    String to = volumeGroupName(sub, stripDev(a.positionals().get(1)));
    if (from.length() == 38 && from.chars().filter(ch -> ch == '-').count() == 6) {
      throw new UnsupportedLvmCommandException(
          sub, "renaming by VG uuid is not supported: name the VG");
    }
    from = volumeGroupName(sub, from);
    return LockPlan.builder()
        .global(LockMode.EX)
        .volumeGroup(from, LockMode.EX)
        .volumeGroup(to, LockMode.EX)
        .everyLogicalVolume(from, LockMode.EX, Scope.INACTIVE)
        .build();
  }

  private static LockPlan vgchange(String sub, LvmArguments a)
      throws UnsupportedLvmCommandException {
    refuseSelection(sub, a);
    if (a.has("lockstart") || a.has("lockstop")) {
      throw new UnsupportedLvmCommandException(
          sub, "lockspaces are started and stopped by clvm-agent, not by vgchange");
    }
    Optional<Activation> activation = activation(sub, a);
    LockMode vgMode = changesMetadata(a) ? LockMode.EX : LockMode.PR;
    List<String> vgs = new ArrayList<>();
    for (String p : a.positionals()) {
      if (p.startsWith("@")) {
        throw new UnsupportedLvmCommandException(sub, "selecting VGs by tag (" + p + ")");
      }
      vgs.add(volumeGroupName(sub, stripDev(p)));
    }
    if (vgs.isEmpty()) {
      // Without a VG, vgchange acts on every VG this host sees, its local ones too (Proxmox's
      // pve): their LVs would take cluster locks, shared by every host's VG of that name, and a
      // leave would have to deactivate the host's root LV, which it cannot.
      throw new UnsupportedLvmCommandException(
          sub,
          "name the shared VG(s): without one, vgchange acts on every VG of this host, local ones"
              + " included");
    }
    LockPlan.Builder plan = LockPlan.builder();
    for (String vg : vgs) {
      plan.volumeGroup(vg, vgMode);
      activation.ifPresent(act -> plan.everyLogicalVolume(vg, act.mode(), act.scope()));
    }
    return plan.build();
  }

  /**
   * lvcreate activates the new LV unless told not to, so it takes the new LV's activation lock. The
   * LV must be named: the lock is named before lvm runs.
   */
  private static LockPlan lvcreate(String sub, LvmArguments a)
      throws UnsupportedLvmCommandException {
    for (String option : MULTI_LV_OPTIONS) {
      if (a.has(option)) {
        throw new UnsupportedLvmCommandException(
            sub, "--" + option + ": snapshot/thin/cache/vdo LVs are not coordinated yet");
      }
    }
    Optional<String> type = a.value("type");
    if (type.isPresent() && MULTI_LV_TYPES.contains(type.get())) {
      throw new UnsupportedLvmCommandException(
          sub, "--type " + type.get() + ": snapshot/thin/cache/vdo LVs are not coordinated yet");
    }
    VgLv target = reference(sub, firstPositional(sub, a, "the VG to create the LV in"));
    String vg = target.vg();
    String lv = target.lv();
    Optional<String> name = a.value("name");
    if (name.isPresent()) {
      VgLv named = name.get().contains("/") ? reference(sub, name.get()) : null;
      if (named != null && (!named.vg().equals(vg) || named.lv() == null)) {
        throw new UnsupportedLvmCommandException(sub, "--name " + name.get() + " names another VG");
      }
      lv = named != null ? named.lv() : logicalVolumeName(sub, name.get());
    }
    if (lv == null) {
      throw new UnsupportedLvmCommandException(
          sub, "give the LV a name (-n NAME): its cluster lock is named before lvm runs");
    }
    LockPlan.Builder plan = LockPlan.builder().volumeGroup(vg, LockMode.EX);
    Activation act = activation(sub, a).orElse(Activation.EXCLUSIVE);
    if (act.scope() == Scope.PERSISTENT_ACTIVATION) {
      plan.logicalVolume(vg, lv, act.mode(), act.scope());
    }
    return plan.build();
  }

  private static LockPlan lvremove(String sub, LvmArguments a)
      throws UnsupportedLvmCommandException {
    return forEachLogicalVolume(
        sub, a, LockMode.EX, new Activation(LockMode.EX, Scope.RELEASE_ACTIVATION));
  }

  /**
   * Both names are locked: the old one so that nobody else has the LV active, the new one so that
   * nobody holds a lock under the name it is about to get. If this host has the LV active, the
   * caller must move its activation lock from the old name to the new one.
   */
  private static LockPlan lvrename(String sub, LvmArguments a)
      throws UnsupportedLvmCommandException {
    Rename r = rename(sub, a);
    return LockPlan.builder()
        .volumeGroup(r.volumeGroup(), LockMode.EX)
        .logicalVolume(r.volumeGroup(), r.from(), LockMode.EX, Scope.TRANSIENT)
        .logicalVolume(r.volumeGroup(), r.to(), LockMode.EX, Scope.TRANSIENT)
        .build();
  }

  private static Rename rename(String sub, LvmArguments a) throws UnsupportedLvmCommandException {
    List<String> p = a.positionals();
    if (p.size() == 3) {
      String vg = volumeGroupName(sub, stripDev(p.get(0)));
      return new Rename(vg, inVolumeGroup(sub, vg, p.get(1)), inVolumeGroup(sub, vg, p.get(2)));
    } else if (p.size() == 2) {
      VgLv old = reference(sub, p.get(0));
      if (old.lv() == null) {
        throw new UnsupportedLvmCommandException(sub, "expected: lvrename VG/OLD NEW");
      }
      return new Rename(old.vg(), old.lv(), inVolumeGroup(sub, old.vg(), p.get(1)));
    }
    throw new UnsupportedLvmCommandException(
        sub, "expected: lvrename VG OLD NEW or lvrename VG/OLD VG/NEW");
  }

  /** An lvrename's VG and the LV's old and new names. */
  public record Rename(String volumeGroup, String from, String to) {}

  /**
   * For lvrename: which LV gets which new name (an activation lock held under the old name must
   * follow it). Empty for every other command.
   */
  public Optional<Rename> logicalVolumeRename() {
    if (!subcommand.equals("lvrename")) {
      return Optional.empty();
    }
    try {
      return Optional.of(rename(subcommand, LvmArguments.parse(subcommand, args)));
    } catch (UnsupportedLvmCommandException e) {
      throw new IllegalStateException("parsed once already: " + e.getMessage(), e);
    }
  }

  /** Like lvmlockd: resizing needs the LV lock EX, i.e. the LV active on no other host. */
  private static LockPlan lvresize(String sub, LvmArguments a)
      throws UnsupportedLvmCommandException {
    VgLv lv = reference(sub, firstPositional(sub, a, "the LV to resize (VG/LV)"));
    if (lv.lv() == null) {
      throw new UnsupportedLvmCommandException(sub, "name the LV as VG/LV");
    }
    return LockPlan.builder()
        .volumeGroup(lv.vg(), LockMode.EX)
        .logicalVolume(lv.vg(), lv.lv(), LockMode.EX, Scope.TRANSIENT)
        .build();
  }

  private static LockPlan lvchange(String sub, LvmArguments a)
      throws UnsupportedLvmCommandException {
    LockMode vgMode = changesMetadata(a) ? LockMode.EX : LockMode.PR;
    Optional<Activation> activation = activation(sub, a);
    if (activation.isEmpty()) {
      // Property changes (tags, permission, ...) or a refresh: the VG lock covers them.
      LockPlan.Builder plan = LockPlan.builder();
      for (VgLv ref : logicalVolumeArguments(sub, a)) {
        plan.volumeGroup(ref.vg(), vgMode);
      }
      return plan.build();
    }
    return forEachLogicalVolume(sub, a, vgMode, activation.get());
  }

  /** VG lock on each VG named, and {@code lvLock} on each LV named (every LV for a bare VG). */
  private static LockPlan forEachLogicalVolume(
      String sub, LvmArguments a, LockMode vgMode, Activation lvLock)
      throws UnsupportedLvmCommandException {
    LockPlan.Builder plan = LockPlan.builder();
    for (VgLv ref : logicalVolumeArguments(sub, a)) {
      plan.volumeGroup(ref.vg(), vgMode);
      if (ref.lv() == null) {
        plan.everyLogicalVolume(ref.vg(), lvLock.mode(), lvLock.scope());
      } else {
        plan.logicalVolume(ref.vg(), ref.lv(), lvLock.mode(), lvLock.scope());
      }
    }
    return plan.build();
  }

  private static List<VgLv> logicalVolumeArguments(String sub, LvmArguments a)
      throws UnsupportedLvmCommandException {
    refuseSelection(sub, a);
    if (a.positionals().isEmpty()) {
      throw new UnsupportedLvmCommandException(sub, "name the LV(s) as VG/LV, or a VG");
    }
    List<VgLv> refs = new ArrayList<>();
    for (String p : a.positionals()) {
      if (p.startsWith("@")) {
        throw new UnsupportedLvmCommandException(sub, "selecting LVs by tag (" + p + ")");
      }
      refs.add(reference(sub, p));
    }
    return refs;
  }

  private static boolean changesMetadata(LvmArguments a) {
    return !READ_ONLY_CHANGE_OPTIONS.containsAll(a.optionNames());
  }

  /** An activation lock to take, keep, or release. */
  private record Activation(LockMode mode, Scope scope) {
    static final Activation EXCLUSIVE = new Activation(LockMode.EX, Scope.PERSISTENT_ACTIVATION);
    static final Activation SHARED = new Activation(LockMode.PR, Scope.PERSISTENT_ACTIVATION);
    static final Activation RELEASE = new Activation(LockMode.NL, Scope.RELEASE_ACTIVATION);
  }

  private static Optional<Activation> activation(String sub, LvmArguments a)
      throws UnsupportedLvmCommandException {
    Optional<String> value = a.value("activate");
    if (value.isEmpty()) {
      return Optional.empty();
    }
    return Optional.of(
        switch (value.get()) {
          // "l" (local) means this host in any case; under a cluster lock it is exclusive unless
          // "s" asks for shared, as lvmlockd does.
          case "y", "ey", "ly" -> Activation.EXCLUSIVE;
          // Autoactivation, which shared VGs have off (clvm vgcreate): lvm would activate nothing
          // and the agent would keep a lock for every LV named.
          case "ay" ->
              throw new UnsupportedLvmCommandException(
                  sub,
                  "-aay is autoactivation, which is off for shared VGs; activate with -aey or"
                      + " -asy");
          case "sy" -> Activation.SHARED;
          case "n", "en", "ln", "sn" -> Activation.RELEASE;
          default ->
              throw new UnsupportedLvmCommandException(
                  sub, "unknown activation mode '" + value.get() + "'");
        });
  }

  private static void refuseSelection(String sub, LvmArguments a)
      throws UnsupportedLvmCommandException {
    if (a.has("select")) {
      throw new UnsupportedLvmCommandException(
          sub,
          "--select picks its targets by reading metadata; name the VGs/LVs so their locks can"
              + " be taken first");
    }
  }

  private static String firstPositional(String sub, LvmArguments a, String what)
      throws UnsupportedLvmCommandException {
    if (a.positionals().isEmpty()) {
      throw new UnsupportedLvmCommandException(sub, "missing " + what);
    }
    return a.positionals().get(0);
  }

  /** A VG or VG/LV argument: {@code vg}, {@code vg/lv}, {@code /dev/vg/lv}. */
  private record VgLv(String vg, String lv) {}

  private static VgLv reference(String sub, String arg) throws UnsupportedLvmCommandException {
    if (arg.startsWith("/dev/mapper/")) {
      throw new UnsupportedLvmCommandException(
          sub, "name LVs as VG/LV, not by device-mapper path (" + arg + ")");
    }
    String path = stripDev(arg);
    String[] parts = path.split("/", -1);
    if (parts.length == 1) {
      return new VgLv(volumeGroupName(sub, parts[0]), null);
    }
    if (parts.length == 2) {
      return new VgLv(volumeGroupName(sub, parts[0]), logicalVolumeName(sub, parts[1]));
    }
    throw new UnsupportedLvmCommandException(sub, "not a VG or VG/LV: " + arg);
  }

  /** An LV argument of a command that already named its VG: {@code lv} or {@code vg/lv}. */
  private static String inVolumeGroup(String sub, String vg, String arg)
      throws UnsupportedLvmCommandException {
    if (!arg.contains("/")) {
      return logicalVolumeName(sub, arg);
    }
    VgLv ref = reference(sub, arg);
    if (!ref.vg().equals(vg) || ref.lv() == null) {
      throw new UnsupportedLvmCommandException(sub, arg + " is not an LV of " + vg);
    }
    return ref.lv();
  }

  private static String stripDev(String arg) {
    return arg.startsWith("/dev/") ? arg.substring("/dev/".length()) : arg;
  }

  private static String volumeGroupName(String sub, String name)
      throws UnsupportedLvmCommandException {
    checkName(sub, "VG", name);
    return name;
  }

  private static String logicalVolumeName(String sub, String name)
      throws UnsupportedLvmCommandException {
    checkName(sub, "LV", name);
    return name;
  }

  private static void checkName(String sub, String what, String name)
      throws UnsupportedLvmCommandException {
    if (!NAME.matcher(name).matches() || name.equals(".") || name.equals("..")) {
      throw new UnsupportedLvmCommandException(sub, "invalid " + what + " name '" + name + "'");
    }
  }
}
