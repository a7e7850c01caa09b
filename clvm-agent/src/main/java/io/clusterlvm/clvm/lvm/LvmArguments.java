package io.clusterlvm.clvm.lvm;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;

/**
 * An lvm command line split the way lvm's getopt_long splits it: options (short options may be
 * bundled, {@code -aey}, {@code -L32G}; long ones may be {@code --name=x} or {@code --name x},
 * dashes inside a long name are ignored, {@code --lock-start} = {@code --lockstart}) and the
 * positional arguments left over.
 *
 * <p>Getting an option's arity wrong would turn its value into a positional argument, i.e. a VG or
 * LV to lock (or not lock). So the tables below list every option we classify, per command where
 * lvm's meaning differs ({@code -n} is {@code --name} for lvcreate but {@code --nofsck} for
 * lvextend), and anything else is refused. Abbreviated long options, which getopt_long would
 * accept, are refused too: lvm could resolve one to an option missing from these tables.
 */
final class LvmArguments {

  /** Long options that take a value, lvm's spelling without dashes. */
  private static final Set<String> VALUED =
      Set.of(
          "activate",
          "activationmode",
          "addtag",
          "alloc",
          "allocatable",
          "autoactivation",
          "autobackup",
          "bootloaderareasize",
          "cachemode",
          "cachepolicy",
          "cachepool",
          "cachesettings",
          "cachevol",
          "chunksize",
          "clustered",
          "commandprofile",
          "compression",
          "config",
          "configreport",
          "contiguous",
          "dataalignment",
          "dataalignmentoffset",
          "deduplication",
          "deltag",
          "devices",
          "devicesfile",
          "discards",
          "driverloaded",
          "errorwhenfull",
          "extents",
          "file",
          "fs",
          "fsmode",
          "headings",
          "journal",
          "labelsector",
          "lockopt",
          "locktype",
          "logicalvolume",
          "major",
          "maxlogicalvolumes",
          "maxphysicalvolumes",
          "metadatacopies",
          "metadataignore",
          "metadataprofile",
          "metadatasize",
          "metadatatype",
          "minor",
          "mirrorlog",
          "mirrors",
          "monitor",
          "name",
          "options",
          "permission",
          "persistent",
          "physicalextentsize",
          "poll",
          "poolmetadatasize",
          "poolmetadataspare",
          "profile",
          "pvmetadatacopies",
          "raidintegrity",
          "readahead",
          "regionsize",
          "reportformat",
          "resizeable",
          "restorefile",
          "select",
          "separator",
          "setactivationskip",
          "setautoactivation",
          "setphysicalvolumesize",
          "size",
          "sort",
          "stripes",
          "stripesize",
          "systemid",
          "thinpool",
          "type",
          "units",
          "vdopool",
          "vgmetadatacopies",
          "virtualsize",
          "wipesignatures",
          "zero");

  /** Long options without a value. */
  private static final Set<String> FLAGS =
      Set.of(
          "activevolumegroups",
          "aligned",
          "all",
          "background",
          "binary",
          "blockdevice",
          "cache",
          "colon",
          "columns",
          "debug",
          "exported",
          "force",
          "foreign",
          "help",
          "history",
          "ignoreactivationskip",
          "ignorelockingfailure",
          "ignoremonitoring",
          "ignoreskippedcluster",
          "ignoreunsupported",
          "list",
          "lockstart",
          "lockstop",
          "logonly",
          "longhelp",
          "lvmpartition",
          "maps",
          "mirrorsonly",
          "mknodes",
          "nameprefixes",
          "nofsck",
          "noheadings",
          "nohints",
          "nolocking",
          "norestorefile",
          "nosuffix",
          "nosync",
          "noudevsync",
          "novolumegroup",
          "partial",
          "quiet",
          "readonly",
          "refresh",
          "removemissing",
          "resizefs",
          "rows",
          "segments",
          "shared",
          "short",
          "snapshot",
          "sysinit",
          "test",
          "thin",
          "unbuffered",
          "unquoted",
          "updatemetadata",
          "vdo",
          "verbose",
          "version",
          "yes");

  private static final String COMMON_SHORT =
      "d:debug h:help q:quiet t:test v:verbose y:yes f:force";
  private static final String REPORT_SHORT = "a:all o:options O:sort S:select P:partial";
  private static final String RESIZE_SHORT =
      "A:autobackup i:stripes I:stripesize l:extents L:size m:mirrors n:nofsck r:resizefs";

  /** Per command: short option letter to lvm's long name. */
  private static final Map<String, Map<Character, String>> SHORT = new HashMap<>();

  /** Per command: the long options (lvm's spelling without dashes) it has. */
  private static final Map<String, Set<String>> LONG = new HashMap<>();

  static {
    shortOptions(
        "lvcreate",
        "a:activate A:autobackup c:chunksize C:contiguous H:cache i:stripes I:stripesize j:major"
            + " k:setactivationskip K:ignoreactivationskip l:extents L:size m:mirrors"
            + " M:persistent n:name p:permission r:readahead R:regionsize s:snapshot T:thin"
            + " V:virtualsize W:wipesignatures Z:zero");
    shortOptions("lvextend", RESIZE_SHORT);
    shortOptions("lvreduce", RESIZE_SHORT);
    shortOptions("lvresize", RESIZE_SHORT);
    shortOptions("lvremove", "A:autobackup S:select");
    shortOptions("lvrename", "A:autobackup");
    shortOptions(
        "lvchange",
        "a:activate A:autobackup C:contiguous j:major k:setactivationskip"
            + " K:ignoreactivationskip M:persistent p:permission r:readahead S:select Z:zero");
    shortOptions("lvs", REPORT_SHORT);
    shortOptions("vgs", REPORT_SHORT);
    shortOptions("pvs", REPORT_SHORT);
    shortOptions("fullreport", REPORT_SHORT);
    shortOptions("lvdisplay", REPORT_SHORT + " c:colon C:columns m:maps");
    shortOptions(
        "vgdisplay",
        "A:activevolumegroups c:colon C:columns s:short o:options O:sort S:select P:partial");
    shortOptions("pvdisplay", REPORT_SHORT + " c:colon C:columns m:maps s:short");
    shortOptions("lvscan", "a:all b:blockdevice");
    shortOptions("vgscan", "");
    shortOptions("pvscan", "a:activate b:background e:exported n:novolumegroup s:short u:uuid");
    shortOptions("lvmdiskscan", "l:lvmpartition");
    shortOptions("vgck", "");
    shortOptions("vgmknodes", "");
    shortOptions("vgcfgbackup", "f:file");
    shortOptions(
        "vgcreate",
        "A:autobackup c:clustered l:maxlogicalvolumes M:metadatatype p:maxphysicalvolumes"
            + " s:physicalextentsize Z:zero");
    shortOptions(
        "vgchange",
        "a:activate A:autobackup c:clustered K:ignoreactivationskip l:logicalvolume"
            + " p:maxphysicalvolumes P:partial s:physicalextentsize S:select u:uuid"
            + " x:resizeable");
    shortOptions("vgremove", "S:select");
    shortOptions("vgextend", "A:autobackup M:metadatatype Z:zero");
    shortOptions("vgreduce", "a:all A:autobackup");
    shortOptions("vgrename", "A:autobackup");
    shortOptions("pvcreate", "M:metadatatype u:uuid Z:zero");
    shortOptions("pvremove", "");
    shortOptions("pvchange", "a:all A:autobackup S:select u:uuid x:allocatable");
    shortOptions("pvresize", "");

    // Per command, the long options of the tables above that lvm (2.03) lists in that command's
    // --longhelp. getopt_long takes an option a command lacks for an abbreviation of one it has:
    // lvcreate --all is --alloc there, and the word after it would be read as the VG to lock.
    // LvmArgumentsTest checks these against the installed lvm.
    longOptions(
        "lvcreate",
        "activate addtag alloc autobackup cache cachemode cachepolicy cachepool "
            + "cachesettings cachevol chunksize commandprofile compression config contiguous "
            + "debug deduplication devices devicesfile discards driverloaded errorwhenfull "
            + "extents help ignoreactivationskip ignoremonitoring journal lockopt longhelp "
            + "major metadataprofile minor mirrorlog mirrors monitor name nohints nolocking "
            + "nosync noudevsync permission persistent poolmetadatasize poolmetadataspare "
            + "profile quiet raidintegrity readahead regionsize reportformat select "
            + "setactivationskip setautoactivation size snapshot stripes stripesize test thin "
            + "thinpool type units vdo vdopool verbose version virtualsize wipesignatures yes "
            + "zero");
    longOptions(
        "lvextend",
        "alloc autobackup commandprofile config debug devices devicesfile driverloaded "
            + "extents force help journal lockopt longhelp mirrors nofsck nohints nolocking "
            + "nosync noudevsync poolmetadatasize profile quiet reportformat resizefs select "
            + "size stripes stripesize test type units verbose version yes");
    longOptions(
        "lvreduce",
        "autobackup commandprofile config debug devices devicesfile driverloaded "
            + "extents force help journal lockopt longhelp nofsck nohints nolocking "
            + "noudevsync profile quiet reportformat resizefs select size test units verbose "
            + "version yes");
    longOptions(
        "lvresize",
        "alloc autobackup commandprofile config debug devices devicesfile driverloaded "
            + "extents force help journal lockopt longhelp nofsck nohints nolocking nosync "
            + "noudevsync poolmetadatasize profile quiet reportformat resizefs select size "
            + "stripes stripesize test type units verbose version yes");
    longOptions(
        "lvremove",
        "autobackup commandprofile config debug devices devicesfile driverloaded force "
            + "help journal lockopt longhelp nohints nolocking noudevsync profile quiet "
            + "reportformat select test units verbose version yes");
    longOptions(
        "lvrename",
        "autobackup commandprofile config debug devices devicesfile driverloaded help "
            + "journal lockopt longhelp nohints nolocking noudevsync profile quiet "
            + "reportformat select test units verbose version yes");
    longOptions(
        "lvchange",
        "activate activationmode addtag alloc autobackup cachemode cachepolicy "
            + "cachesettings commandprofile compression config contiguous debug deduplication "
            + "deltag devices devicesfile discards driverloaded errorwhenfull force help "
            + "ignoreactivationskip ignorelockingfailure ignoremonitoring journal lockopt "
            + "longhelp major metadataprofile minor monitor nohints nolocking noudevsync "
            + "partial permission persistent poll profile quiet readahead readonly refresh "
            + "reportformat select setactivationskip setautoactivation sysinit test units "
            + "verbose version yes zero");
    longOptions(
        "lvs",
        "aligned all binary commandprofile config configreport debug devices "
            + "devicesfile driverloaded foreign help history ignorelockingfailure journal "
            + "lockopt logonly longhelp nameprefixes noheadings nohints nolocking nosuffix "
            + "options profile quiet readonly reportformat rows segments select separator "
            + "shared sort test unbuffered units unquoted verbose version yes");
    longOptions(
        "vgs",
        "aligned all binary commandprofile config configreport debug devices "
            + "devicesfile driverloaded foreign help ignorelockingfailure journal lockopt "
            + "logonly longhelp nameprefixes noheadings nohints nolocking nosuffix options "
            + "profile quiet readonly reportformat rows select separator shared sort test "
            + "unbuffered units unquoted verbose version yes");
    longOptions(
        "pvs",
        "aligned all binary commandprofile config configreport debug devices "
            + "devicesfile driverloaded foreign help ignorelockingfailure journal lockopt "
            + "logonly longhelp nameprefixes noheadings nohints nolocking nosuffix options "
            + "profile quiet readonly reportformat rows segments select separator shared sort "
            + "test unbuffered units unquoted verbose version yes");
    longOptions(
        "fullreport",
        "aligned all binary commandprofile config configreport debug devices "
            + "devicesfile driverloaded foreign help ignorelockingfailure journal lockopt "
            + "logonly longhelp nameprefixes noheadings nohints nolocking nosuffix options "
            + "profile quiet readonly reportformat rows select separator shared sort test "
            + "unbuffered units unquoted verbose version yes");
    longOptions(
        "lvdisplay",
        "aligned all binary colon columns commandprofile config configreport debug "
            + "devices devicesfile driverloaded foreign help history ignorelockingfailure "
            + "journal lockopt logonly longhelp maps noheadings nohints nolocking nosuffix "
            + "options profile quiet readonly segments select separator shared sort test "
            + "unbuffered units verbose version yes");
    longOptions(
        "vgdisplay",
        "activevolumegroups aligned binary colon columns commandprofile config "
            + "configreport debug devices devicesfile driverloaded foreign help "
            + "ignorelockingfailure journal lockopt logonly longhelp noheadings nohints "
            + "nolocking nosuffix options profile quiet readonly select separator shared "
            + "short sort test unbuffered units verbose version yes");
    longOptions(
        "pvdisplay",
        "aligned all binary colon columns commandprofile config configreport debug "
            + "devices devicesfile driverloaded foreign help ignorelockingfailure journal "
            + "lockopt logonly longhelp maps noheadings nohints nolocking nosuffix options "
            + "profile quiet readonly select separator shared short sort test unbuffered "
            + "units verbose version yes");
    longOptions(
        "lvscan",
        "all blockdevice commandprofile config debug devices devicesfile driverloaded "
            + "help ignorelockingfailure journal lockopt longhelp nohints nolocking profile "
            + "quiet readonly reportformat select test units verbose version yes");
    longOptions(
        "vgscan",
        "commandprofile config debug devices devicesfile driverloaded help "
            + "ignorelockingfailure journal lockopt longhelp mknodes nohints nolocking "
            + "profile quiet reportformat select test units verbose version yes");
    longOptions(
        "pvscan",
        "activate autoactivation cache commandprofile config debug devices devicesfile "
            + "driverloaded exported help ignorelockingfailure journal lockopt longhelp major "
            + "minor nohints nolocking noudevsync novolumegroup profile quiet reportformat "
            + "select short test units uuid verbose version yes");
    longOptions(
        "lvmdiskscan",
        "commandprofile config debug devices devicesfile driverloaded help journal "
            + "lockopt longhelp lvmpartition nohints nolocking profile quiet readonly select "
            + "test units verbose version yes");
    longOptions(
        "vgck",
        "commandprofile config debug devices devicesfile driverloaded help journal "
            + "lockopt longhelp nohints nolocking profile quiet reportformat select test "
            + "units updatemetadata verbose version yes");
    longOptions(
        "vgmknodes",
        "commandprofile config debug devices devicesfile driverloaded help "
            + "ignorelockingfailure journal lockopt longhelp nohints nolocking profile quiet "
            + "refresh reportformat select test units verbose version yes");
    longOptions(
        "vgcfgbackup",
        "commandprofile config debug devices devicesfile driverloaded file foreign help "
            + "ignorelockingfailure journal lockopt longhelp nohints nolocking profile quiet "
            + "readonly reportformat select test units verbose version yes");
    longOptions(
        "vgcreate",
        "addtag alloc autobackup clustered commandprofile config dataalignment "
            + "dataalignmentoffset debug devices devicesfile driverloaded force help journal "
            + "labelsector lockopt locktype longhelp maxlogicalvolumes maxphysicalvolumes "
            + "metadataprofile metadatasize metadatatype nohints nolocking physicalextentsize "
            + "profile pvmetadatacopies quiet reportformat select setautoactivation shared "
            + "systemid test units verbose version vgmetadatacopies yes zero");
    longOptions(
        "vgchange",
        "activate activationmode addtag alloc autoactivation autobackup commandprofile "
            + "config debug deltag devices devicesfile driverloaded force help "
            + "ignoreactivationskip ignorelockingfailure ignoremonitoring journal lockopt "
            + "lockstart lockstop locktype logicalvolume longhelp maxphysicalvolumes "
            + "metadataprofile monitor nohints nolocking noudevsync partial "
            + "physicalextentsize poll profile pvmetadatacopies quiet readonly refresh "
            + "reportformat resizeable select setautoactivation sysinit systemid test units "
            + "uuid verbose version vgmetadatacopies yes");
    longOptions(
        "vgremove",
        "commandprofile config debug devices devicesfile driverloaded force help "
            + "journal lockopt longhelp nohints nolocking noudevsync profile quiet "
            + "reportformat select test units verbose version yes");
    longOptions(
        "vgextend",
        "autobackup commandprofile config dataalignment dataalignmentoffset debug "
            + "devices devicesfile driverloaded force help journal labelsector lockopt "
            + "longhelp metadataignore metadatasize metadatatype nohints nolocking profile "
            + "pvmetadatacopies quiet reportformat select test units verbose version yes zero");
    longOptions(
        "vgreduce",
        "all autobackup commandprofile config debug devices devicesfile driverloaded "
            + "force help journal lockopt longhelp mirrorsonly nohints nolocking profile "
            + "quiet removemissing reportformat select test units verbose version yes");
    longOptions(
        "vgrename",
        "autobackup commandprofile config debug devices devicesfile driverloaded force "
            + "help journal lockopt longhelp nohints nolocking profile quiet reportformat "
            + "select test units verbose version yes");
    longOptions(
        "pvcreate",
        "bootloaderareasize commandprofile config dataalignment dataalignmentoffset "
            + "debug devices devicesfile driverloaded force help journal labelsector lockopt "
            + "longhelp metadataignore metadatasize metadatatype nohints nolocking "
            + "norestorefile profile pvmetadatacopies quiet reportformat restorefile select "
            + "setphysicalvolumesize test units uuid verbose version yes zero");
    longOptions(
        "pvremove",
        "commandprofile config debug devices devicesfile driverloaded force help "
            + "journal lockopt longhelp nohints nolocking profile quiet reportformat select "
            + "test units verbose version yes");
    longOptions(
        "pvchange",
        "addtag all allocatable autobackup commandprofile config debug deltag devices "
            + "devicesfile driverloaded force help journal lockopt longhelp metadataignore "
            + "nohints nolocking profile quiet reportformat select test units uuid verbose "
            + "version yes");
    longOptions(
        "pvresize",
        "commandprofile config debug devices devicesfile driverloaded help journal "
            + "lockopt longhelp nohints nolocking profile quiet reportformat select "
            + "setphysicalvolumesize test units verbose version yes");
  }

  private final Map<String, List<String>> options;
  private final List<String> positionals;

  private LvmArguments(Map<String, List<String>> options, List<String> positionals) {
    this.options = options;
    this.positionals = positionals;
  }

  /** The subcommands that have option tables here. */
  static Set<String> subcommands() {
    return Set.copyOf(SHORT.keySet());
  }

  /** Whether {@code subcommand} has an option table here. */
  static boolean knows(String subcommand) {
    return SHORT.containsKey(subcommand);
  }

  /**
   * Splits {@code args} of a known {@code subcommand}.
   *
   * @throws UnsupportedLvmCommandException on an option missing from the tables or a missing value
   */
  static LvmArguments parse(String subcommand, List<String> args)
      throws UnsupportedLvmCommandException {
    Map<Character, String> shortNames = SHORT.get(subcommand);
    if (shortNames == null) {
      throw new IllegalArgumentException("no option table for " + subcommand);
    }
    Map<String, List<String>> options = new LinkedHashMap<>();
    List<String> positionals = new ArrayList<>();
    for (int i = 0; i < args.size(); i++) {
      String arg = args.get(i);
      if (arg.equals("--")) {
        positionals.addAll(args.subList(i + 1, args.size()));
        break;
      } else if (arg.startsWith("--")) {
        int eq = arg.indexOf('=');
        String name = (eq < 0 ? arg.substring(2) : arg.substring(2, eq)).replace("-", "");
        boolean valued = takesValue(subcommand, name, arg);
        if (!LONG.get(subcommand).contains(name)) {
          throw refuse(
              subcommand,
              "lvm "
                  + subcommand
                  + " has no option --"
                  + name
                  + "; lvm would take it for an abbreviation of another option");
        }
        String value;
        if (!valued) {
          if (eq >= 0) {
            throw refuse(subcommand, "option --" + name + " takes no value");
          }
          value = "";
        } else if (eq >= 0) {
          value = arg.substring(eq + 1);
        } else if (i + 1 < args.size()) {
          value = args.get(++i);
        } else {
          throw refuse(subcommand, "option " + arg + " needs a value");
        }
        options.computeIfAbsent(name, k -> new ArrayList<>()).add(value);
      } else if (arg.startsWith("-") && arg.length() > 1) {
        // Bundled short options: flags until one that takes a value, which eats the rest of the
        // word or, if nothing is left, the next word.
        for (int c = 1; c < arg.length(); c++) {
          char letter = arg.charAt(c);
          String name = shortNames.get(letter);
          if (name == null) {
            throw refuse(subcommand, "unrecognized option -" + letter);
          }
          if (!takesValue(subcommand, name, "-" + letter)) {
            options.computeIfAbsent(name, k -> new ArrayList<>()).add("");
            continue;
          }
          String value;
          if (c + 1 < arg.length()) {
            value = arg.substring(c + 1);
          } else if (i + 1 < args.size()) {
            value = args.get(++i);
          } else {
            throw refuse(subcommand, "option -" + letter + " needs a value");
          }
          options.computeIfAbsent(name, k -> new ArrayList<>()).add(value);
          break;
        }
      } else {
        positionals.add(arg);
      }
    }
    return new LvmArguments(options, List.copyOf(positionals));
  }

  boolean has(String name) {
    return options.containsKey(name);
  }

  /** The last value given for {@code name} (lvm lets a later one override an earlier one). */
  Optional<String> value(String name) {
    List<String> values = options.get(name);
    return values == null ? Optional.empty() : Optional.of(values.get(values.size() - 1));
  }

  /** Every value given for {@code name}, in order; empty if the option is absent. */
  List<String> values(String name) {
    return List.copyOf(options.getOrDefault(name, List.of()));
  }

  Set<String> optionNames() {
    return options.keySet();
  }

  List<String> positionals() {
    return positionals;
  }

  private static boolean takesValue(String subcommand, String name, String spelledAs)
      throws UnsupportedLvmCommandException {
    if (name.equals("uuid")) {
      // pvcreate --uuid <uuid> sets it; vgchange/pvchange --uuid regenerate one.
      return subcommand.equals("pvcreate");
    }
    if (VALUED.contains(name)) {
      return true;
    }
    if (FLAGS.contains(name)) {
      return false;
    }
    throw refuse(
        subcommand,
        "unrecognized option "
            + spelledAs
            + " (clvm passes only options it can classify; abbreviations are not accepted)");
  }

  private static UnsupportedLvmCommandException refuse(String subcommand, String reason) {
    return new UnsupportedLvmCommandException(subcommand, reason);
  }

  /** The short options {@code subcommand} has, for a test that holds them against lvm's. */
  static Map<Character, String> shortOptionsOf(String subcommand) {
    return SHORT.getOrDefault(subcommand, Map.of());
  }

  /** The long options {@code subcommand} has, for a test that holds them against lvm's. */
  static Set<String> longOptionsOf(String subcommand) {
    return LONG.getOrDefault(subcommand, Set.of());
  }

  private static void longOptions(String subcommand, String names) {
    LONG.put(subcommand, Set.of(names.trim().split("\\s+")));
  }

  private static void shortOptions(String subcommand, String spec) {
    Map<Character, String> table = new HashMap<>();
    for (String entry : (COMMON_SHORT + " " + spec).trim().split("\\s+")) {
      // A command's own meaning of a letter overrides the common one (vgcfgbackup -f is --file).
      table.put(entry.charAt(0), entry.substring(2));
    }
    SHORT.put(subcommand, Map.copyOf(table));
  }
}
