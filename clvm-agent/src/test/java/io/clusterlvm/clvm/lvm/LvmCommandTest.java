package io.clusterlvm.clvm.lvm;

import static io.clusterlvm.clvm.lvm.LockRequirement.Scope.INACTIVE;
import static io.clusterlvm.clvm.lvm.LockRequirement.Scope.PERSISTENT_ACTIVATION;
import static io.clusterlvm.clvm.lvm.LockRequirement.Scope.RELEASE_ACTIVATION;
import static io.clusterlvm.clvm.lvm.LockRequirement.Scope.TRANSIENT;
import static io.clusterlvm.dlm.client.LockMode.EX;
import static io.clusterlvm.dlm.client.LockMode.NL;
import static io.clusterlvm.dlm.client.LockMode.PR;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.clusterlvm.clvm.lvm.LockPlan.EveryLogicalVolume;
import io.clusterlvm.clvm.lvm.LockRequirement.Scope;
import io.clusterlvm.dlm.client.LockMode;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

@Timeout(value = 10, unit = TimeUnit.SECONDS)
class LvmCommandTest {

  private static LockPlan plan(String commandLine) throws UnsupportedLvmCommandException {
    return LvmCommand.parse(commandLine.split(" ")).lockPlan();
  }

  private static LockRequirement global(LockMode mode) {
    return LockRequirement.global(mode);
  }

  private static LockRequirement vg(String vg, LockMode mode) {
    return LockRequirement.volumeGroup(vg, mode);
  }

  private static LockRequirement lv(String vg, String lv, LockMode mode, Scope scope) {
    return LockRequirement.logicalVolume(vg, lv, mode, scope);
  }

  private static EveryLogicalVolume everyLv(String vg, LockMode mode, Scope scope) {
    return new EveryLogicalVolume(Optional.ofNullable(vg), mode, scope);
  }

  private static void assertRefused(String commandLine, String reasonFragment) {
    assertThatThrownBy(() -> plan(commandLine))
        .isInstanceOf(UnsupportedLvmCommandException.class)
        .hasMessageContaining(reasonFragment);
  }

  @Test
  void lockNamesFollowLvmlockd() throws Exception {
    LockPlan plan = plan("lvcreate -n vm-101-disk-1 -L 32G vg_shared");
    assertThat(plan.locks())
        .extracting(LockRequirement::lockspace, LockRequirement::resource)
        .containsExactly(
            org.assertj.core.groups.Tuple.tuple("lvm_vg_shared", "VGLK"),
            org.assertj.core.groups.Tuple.tuple("lvm_vg_shared", "vm-101-disk-1"));
    assertThat(plan("pvcreate /dev/sdb").locks())
        .extracting(LockRequirement::lockspace, LockRequirement::resource)
        .containsExactly(org.assertj.core.groups.Tuple.tuple("lvm_global", "GLLK"));
  }

  @Nested
  class Lvcreate {
    @Test
    void activatesTheNewLvExclusivelyByDefault() throws Exception {
      LockPlan plan = plan("lvcreate -n vm-101-disk-1 -L 32G vg_shared");
      assertThat(plan.locks())
          .containsExactly(
              vg("vg_shared", EX), lv("vg_shared", "vm-101-disk-1", EX, PERSISTENT_ACTIVATION));
      assertThat(plan.isResolved()).isTrue();
      assertThat(plan.modifiedVolumeGroups()).containsExactly("vg_shared");
    }

    @Test
    void proxmoxCommandLine() throws Exception {
      assertThat(
              plan("lvcreate -aly -Wy --yes --size 4194304k --name vm-100-disk-0"
                      + " --addtag pve-vm-100 vg0")
                  .locks())
          .containsExactly(vg("vg0", EX), lv("vg0", "vm-100-disk-0", EX, PERSISTENT_ACTIVATION));
    }

    @Test
    void sharedActivationTakesPr() throws Exception {
      assertThat(plan("lvcreate -asy -n data -L 1G vg").locks())
          .containsExactly(vg("vg", EX), lv("vg", "data", PR, PERSISTENT_ACTIVATION));
    }

    @Test
    void withoutActivationOnlyTheVgLock() throws Exception {
      assertThat(plan("lvcreate -an -n data -L 1G vg").locks()).containsExactly(vg("vg", EX));
      assertThat(plan("lvcreate --activate=n -n data -L 1G vg").locks())
          .containsExactly(vg("vg", EX));
    }

    @Test
    void bundledAndAttachedShortOptions() throws Exception {
      // -y is a flag, -n takes the rest of the word; -L32G attached; PVs after the VG.
      assertThat(plan("lvcreate -ynvm-1 -L32G vg /dev/sdb /dev/sdc").locks())
          .containsExactly(vg("vg", EX), lv("vg", "vm-1", EX, PERSISTENT_ACTIVATION));
    }

    @Test
    void nameFromVgSlashLv() throws Exception {
      assertThat(plan("lvcreate -L 1G vg/data").locks())
          .containsExactly(vg("vg", EX), lv("vg", "data", EX, PERSISTENT_ACTIVATION));
      assertThat(plan("lvcreate --name=vg/data -L 1G vg").locks())
          .containsExactly(vg("vg", EX), lv("vg", "data", EX, PERSISTENT_ACTIVATION));
    }

    @Test
    void refusesUnnamedLv() {
      assertRefused("lvcreate -L 1G vg", "give the LV a name");
    }

    @Test
    void refusesMultiLvLayouts() {
      assertRefused("lvcreate -s -n snap -L 1G vg/origin", "--snapshot");
      assertRefused("lvcreate --type thin-pool -n pool -L 1G vg", "thin-pool");
      assertRefused("lvcreate -T -V 1G -n thin vg/pool", "not coordinated yet");
    }

    @Test
    void refusesReservedAndOverlongNames() {
      assertRefused("lvcreate -n VGLK -L 1G vg", "reserved");
      assertRefused("lvcreate -n x -L 1G global", "reserved");
      assertRefused("lvcreate -n " + "a".repeat(65) + " -L 1G vg", "64 bytes");
      assertRefused("lvcreate -n bad/name/x -L 1G vg", "not a VG or VG/LV");
      assertRefused("lvcreate -n -bad -L 1G vg", "invalid LV name");
    }
  }

  @Nested
  class Resize {
    @ParameterizedTest
    @ValueSource(
        strings = {
          "lvextend -L +1G vg_shared/lv",
          "lvextend -r -L +1G /dev/vg_shared/lv",
          "lvreduce -n -L -1G vg_shared/lv",
          "lvresize -l +100%FREE vg_shared/lv /dev/sdb"
        })
    void needsVgExAndLvEx(String commandLine) throws Exception {
      assertThat(plan(commandLine).locks())
          .containsExactly(vg("vg_shared", EX), lv("vg_shared", "lv", EX, TRANSIENT));
    }

    @Test
    void refusesBareVg() {
      assertRefused("lvextend -L +1G vg_shared", "VG/LV");
    }
  }

  @Nested
  class Lvremove {
    @Test
    void releasesTheActivationLockAfterRemoval() throws Exception {
      assertThat(plan("lvremove -y vg/lv").locks())
          .containsExactly(vg("vg", EX), lv("vg", "lv", EX, RELEASE_ACTIVATION));
    }

    @Test
    void severalVgsInOrder() throws Exception {
      assertThat(plan("lvremove -f vg_b/x vg_a/y /dev/vg_a/b").locks())
          .containsExactly(
              vg("vg_a", EX),
              vg("vg_b", EX),
              lv("vg_a", "b", EX, RELEASE_ACTIVATION),
              lv("vg_a", "y", EX, RELEASE_ACTIVATION),
              lv("vg_b", "x", EX, RELEASE_ACTIVATION));
    }

    @Test
    void bareVgMeansEveryLv() throws Exception {
      LockPlan plan = plan("lvremove -y vg");
      assertThat(plan.locks()).containsExactly(vg("vg", EX));
      assertThat(plan.everyLogicalVolume()).containsExactly(everyLv("vg", EX, RELEASE_ACTIVATION));
    }

    @Test
    void refusesSelectionAndTags() {
      assertRefused("lvremove -S lv_name=x vg", "--select");
      assertRefused("lvremove @old", "by tag");
      assertRefused("lvremove /dev/mapper/vg-lv", "device-mapper path");
      assertRefused("lvremove -y", "name the LV");
    }
  }

  @Nested
  class Lvrename {
    @ParameterizedTest
    @ValueSource(
        strings = {
          "lvrename vg old new",
          "lvrename vg/old vg/new",
          "lvrename vg/old new",
          "lvrename /dev/vg/old /dev/vg/new"
        })
    void locksBothNames(String commandLine) throws Exception {
      assertThat(plan(commandLine).locks())
          .containsExactly(
              vg("vg", EX), lv("vg", "new", EX, TRANSIENT), lv("vg", "old", EX, TRANSIENT));
    }

    @ParameterizedTest
    @ValueSource(
        strings = {
          "lvrename vg old new",
          "lvrename -A n vg/old vg/new",
          "lvrename vg/old new --autobackup n",
        })
    void saysWhichNameIsNew(String commandLine) throws Exception {
      assertThat(LvmCommand.parse(commandLine.split(" ")).logicalVolumeRename())
          .hasValue(new LvmCommand.Rename("vg", "old", "new"));
      assertThat(LvmCommand.parse("lvs", "vg").logicalVolumeRename()).isEmpty();
    }

    @Test
    void refusesCrossVgRename() {
      assertRefused("lvrename vg/old other/new", "not an LV of vg");
      assertRefused("lvrename vg", "expected");
    }
  }

  @Nested
  class Activation {
    @ParameterizedTest
    @ValueSource(strings = {"-aey", "-ay", "-aly", "-a ey", "--activate ey", "--activate=y"})
    void exclusive(String option) throws Exception {
      assertThat(plan("lvchange " + option + " vg/lv").locks())
          .containsExactly(vg("vg", PR), lv("vg", "lv", EX, PERSISTENT_ACTIVATION));
    }

    @Test
    void shared() throws Exception {
      assertThat(plan("lvchange -asy vg/lv").locks())
          .containsExactly(vg("vg", PR), lv("vg", "lv", PR, PERSISTENT_ACTIVATION));
    }

    @ParameterizedTest
    @ValueSource(strings = {"-an", "-aln", "-a n", "--activate n"})
    void deactivationReleases(String option) throws Exception {
      assertThat(plan("lvchange " + option + " vg/lv").locks())
          .containsExactly(vg("vg", PR), lv("vg", "lv", NL, RELEASE_ACTIVATION));
    }

    @Test
    void lvchangeOnBareVgCoversEveryLv() throws Exception {
      LockPlan plan = plan("lvchange -an vg");
      assertThat(plan.locks()).containsExactly(vg("vg", PR));
      assertThat(plan.everyLogicalVolume()).containsExactly(everyLv("vg", NL, RELEASE_ACTIVATION));
    }

    @Test
    void vgchangeDeactivatesEveryLvOfTheVg() throws Exception {
      LockPlan plan = plan("vgchange -an vg");
      assertThat(plan.locks()).containsExactly(vg("vg", PR));
      assertThat(plan.everyLogicalVolume()).containsExactly(everyLv("vg", NL, RELEASE_ACTIVATION));
    }

    /**
     * Without a VG, vgchange acts on every VG of the host, its local ones too (Proxmox's pve):
     * their LVs would take cluster locks and the host's leave would have to deactivate its root LV
     * (found in review; it used to lock every LV of every VG).
     */
    @ParameterizedTest
    @ValueSource(
        strings = {"vgchange -aey", "vgchange -an", "vgchange -x n", "vgchange --addtag t"})
    void vgchangeWithoutVgIsRefused(String commandLine) {
      assertRefused(commandLine, "name the shared VG(s)");
    }

    @Test
    void activationPlusPropertyChangeWritesTheVg() throws Exception {
      assertThat(plan("lvchange -ay -p r vg/lv").locks())
          .containsExactly(vg("vg", EX), lv("vg", "lv", EX, PERSISTENT_ACTIVATION));
    }

    @Test
    void refusesUnknownActivationMode() {
      assertRefused("lvchange -axy vg/lv", "unknown activation mode");
    }
  }

  @Nested
  class PropertyChanges {
    @Test
    void lvchangeProperties() throws Exception {
      assertThat(plan("lvchange --addtag pve vg/lv").locks()).containsExactly(vg("vg", EX));
      assertThat(plan("lvchange --refresh vg/lv").locks()).containsExactly(vg("vg", PR));
      assertThat(plan("lvchange -p r vg/a vg/b").locks()).containsExactly(vg("vg", EX));
    }

    @Test
    void vgchangeProperties() throws Exception {
      assertThat(plan("vgchange --addtag x vg").locks()).containsExactly(vg("vg", EX));
      assertThat(plan("vgchange -x n vg").locks()).containsExactly(vg("vg", EX));
    }

    @Test
    void vgchangeLockStartIsOurs() {
      assertRefused("vgchange --lock-start vg", "clvm-agent");
      assertRefused("vgchange --lockstop vg", "clvm-agent");
    }
  }

  @Nested
  class GlobalLock {
    @Test
    void vgcreate() throws Exception {
      assertThat(plan("vgcreate --shared vg /dev/x").locks())
          .containsExactly(global(EX), vg("vg", EX));
      assertThat(plan("vgcreate -s 4M vg /dev/x /dev/y").locks())
          .containsExactly(global(EX), vg("vg", EX));
    }

    @Test
    void vgremoveNeedsEveryLvInactiveEverywhere() throws Exception {
      LockPlan plan = plan("vgremove -f vg");
      assertThat(plan.locks()).containsExactly(global(EX), vg("vg", EX));
      assertThat(plan.everyLogicalVolume()).containsExactly(everyLv("vg", EX, RELEASE_ACTIVATION));
      assertRefused("vgremove", "name the VG");
    }

    @Test
    void vgextendAndVgreduce() throws Exception {
      assertThat(plan("vgextend vg /dev/y").locks()).containsExactly(global(EX), vg("vg", EX));
      assertThat(plan("vgreduce -a vg").locks()).containsExactly(global(EX), vg("vg", EX));
      // It would drop LVs on a PV that only this host misses, which others still run.
      assertRefused("vgreduce --removemissing vg", "PVs this host does not see");
      assertRefused("vgreduce --removemissing --force vg", "PVs this host does not see");
    }

    @Test
    void pvCommands() throws Exception {
      assertThat(plan("pvcreate /dev/x /dev/y").locks()).containsExactly(global(EX));
      assertThat(plan("pvremove -y /dev/x").locks()).containsExactly(global(EX));
      // -ff re-labels or wipes a PV of a VG: that VG's writers must wait, whichever it is.
      for (String forced :
          List.of("pvcreate -ff -y --uuid abc --norestorefile /dev/x", "pvremove -ff -y /dev/x")) {
        LockPlan plan = plan(forced);
        assertThat(plan.locks()).as(forced).containsExactly(global(EX));
        assertThat(plan.everyVolumeGroup()).as(forced).contains(EX);
      }
      LockPlan resize = plan("pvresize /dev/x");
      assertThat(resize.locks()).containsExactly(global(EX));
      assertThat(resize.everyVolumeGroup()).contains(EX);
      assertThat(plan("pvchange -x n /dev/x").everyVolumeGroup()).contains(EX);
    }

    @Test
    void vgrenameLocksBothLockspacesAndEveryLv() throws Exception {
      LockPlan plan = plan("vgrename vg_old vg_new");
      assertThat(plan.locks()).containsExactly(global(EX), vg("vg_new", EX), vg("vg_old", EX));
      assertThat(plan.everyLogicalVolume()).containsExactly(everyLv("vg_old", EX, INACTIVE));
      assertRefused("vgrename Zvlifi-Ep3t-e0Ng-U42h-o0ye-KHu1-nl7Ns4 vg_new", "uuid");
    }
  }

  /**
   * Options lvm reads differently than the command line says: per command, getopt_long takes an
   * option the command lacks for an abbreviation of one it has; and options with which lvm only
   * pretends, or sees part of the VG, while the agent moves locks as if it had done the work.
   */
  @Nested
  class MisreadOptions {
    @Test
    void anOptionTheCommandLacksIsRefusedNotTakenForAnAbbreviation() {
      // lvm reads lvcreate --all as --alloc: "normal" would be the VG locked, and vg_shared not.
      assertRefused("lvcreate --all normal -n vm-1 -L 10G vg_shared", "has no option --all");
      assertRefused("vgcreate --all normal vgX /dev/sdb", "has no option --all");
      // lvs --name is --nameprefixes: vgB would be read without its lock.
      assertRefused("lvs --name vgB vgA", "has no option --name");
      assertRefused("lvchange --regionsize 1M vg/lv", "has no option --regionsize");
    }

    @ParameterizedTest
    @ValueSource(
        strings = {
          "lvchange -an -t vg/lv",
          "lvchange -an --test vg/lv",
          "lvremove -tf vg/lv",
          "lvrename -t vg a b",
          "vgchange -an --readonly vg",
          "lvchange -an --driverloaded n vg/lv",
          "lvcreate -n lv -L 4M --devices /dev/sdb vg",
          "vgextend --devicesfile other vg /dev/sdc"
        })
    void makeBelieveOptionsAreRefusedOnCommandsThatMoveLocks(String commandLine) {
      assertRefused(commandLine, "as if it had done what the command says");
    }

    @Test
    void makeBelieveOptionsStayAllowedInReports() throws Exception {
      assertThat(plan("lvs --readonly vg").locks()).containsExactly(vg("vg", PR));
      assertThat(plan("vgs --devices /dev/sdb vg").locks()).containsExactly(vg("vg", PR));
    }

    @Test
    void autoactivationStaysOff() throws Exception {
      assertRefused("vgchange --setautoactivation y vg", "--setautoactivation y");
      assertRefused("lvcreate --setautoactivation y -n x -L 4M vg", "--setautoactivation y");
      assertThat(plan("vgchange --setautoactivation n vg").locks()).contains(vg("vg", EX));
      // lvm would activate nothing, while the agent kept a lock for every LV named.
      assertRefused("lvchange -aay vg/lv", "-aay is autoactivation");
      assertRefused("vgchange -aay vg", "-aay is autoactivation");
    }

    @Test
    void typesIsNoLvmCommand() {
      // lvm would run a file named "types" in its working directory as a script, unlocked.
      assertRefused("types", "unknown lvm subcommand");
    }
  }

  @Nested
  class Reports {
    @ParameterizedTest
    @ValueSource(
        strings = {
          "lvs",
          "vgs",
          "pvs",
          "pvs /dev/loop0",
          "lvs @pve",
          "lvscan",
          "vgscan",
          "lvdisplay",
          "vgdisplay -C",
          "pvdisplay -m",
          "lvs -a -o +devices",
          "vgck"
        })
    void withoutVgNameEveryVgUnderGlobalPr(String commandLine) throws Exception {
      LockPlan plan = plan(commandLine);
      assertThat(plan.locks()).containsExactly(global(PR));
      assertThat(plan.everyVolumeGroup()).contains(PR);
      assertThat(plan.everyLogicalVolume()).isEmpty();
    }

    @Test
    void namedVgsOnlyTheirVgLocks() throws Exception {
      assertThat(plan("lvs vg_shared").locks()).containsExactly(vg("vg_shared", PR));
      assertThat(plan("lvs vg_shared/lv1 /dev/vg_b/lv2").locks())
          .containsExactly(vg("vg_b", PR), vg("vg_shared", PR));
      assertThat(plan("vgs vg2 vg1").locks()).containsExactly(vg("vg1", PR), vg("vg2", PR));
      assertThat(plan("vgdisplay vg").locks()).containsExactly(vg("vg", PR));
      assertThat(plan("lvs -- vg").locks()).containsExactly(vg("vg", PR));
    }

    @Test
    void optionValuesAreNotVgNames() throws Exception {
      // Proxmox's lvs/vgs command lines.
      assertThat(
              plan("lvs --separator : --noheadings --units b --unbuffered --nosuffix"
                      + " --options vg_name,lv_name,lv_size,lv_attr,pool_lv,data_percent"
                      + " vg0")
                  .locks())
          .containsExactly(vg("vg0", PR));
      assertThat(plan("vgs -o vg_seqno --noheadings -O vg_name vg0").locks())
          .containsExactly(vg("vg0", PR));
      assertThat(plan("lvs -olv_name,vg_seqno -S lv_size>0 vg0").locks())
          .containsExactly(vg("vg0", PR));
    }

    @Test
    void vgckUpdatemetadataWrites() throws Exception {
      assertThat(plan("vgck vg").locks()).containsExactly(vg("vg", PR));
      assertThat(plan("vgck --updatemetadata vg").locks()).containsExactly(vg("vg", EX));
    }

    @Test
    void lvmdiskscanReadsDevicesOnly() throws Exception {
      assertThat(plan("lvmdiskscan").locks()).containsExactly(global(PR));
    }

    @Test
    void pvscanAutoactivationRefused() {
      assertRefused("pvscan --cache -aay /dev/x", "autoactivation");
    }
  }

  @Nested
  class Refusals {
    @Test
    void unknownSubcommand() {
      assertRefused("frobnicate vg", "unknown lvm subcommand");
    }

    @Test
    void knownButUncoordinated() {
      assertRefused("lvconvert --type raid1 vg/lv", "layout");
      assertRefused("pvmove /dev/x", "mirror");
      assertRefused("vgsplit vg1 vg2 /dev/x", "lockspace");
      assertRefused("vgcfgrestore vg", "inactive on every host");
    }

    @Test
    void unknownOrAbbreviatedOptions() {
      assertRefused("lvcreate --frobnicate -n x -L 1G vg", "unrecognized option --frobnicate");
      assertRefused("lvcreate --nam x -L 1G vg", "abbreviations");
      assertRefused("lvs --nohead vg", "abbreviations");
      assertRefused("lvcreate -Q -n x vg", "unrecognized option -Q");
      assertRefused("lvcreate -n", "needs a value");
      assertRefused("lvs --noheadings=1", "takes no value");
    }

    @Test
    void dashesInLongOptionsAreIgnoredAsLvmDoes() throws Exception {
      assertThat(plan("lvs --no-headings vg").locks()).containsExactly(vg("vg", PR));
    }
  }

  @Nested
  class MirrorAndRaid {
    private static final String REASON =
        "mirror and RAID LVs are not supported in a shared VG: dmeventd would repair them";

    @ParameterizedTest
    @ValueSource(
        strings = {
          "mirror",
          "raid0",
          "raid0_meta",
          "raid1",
          "raid4",
          "raid5",
          "raid5_ls",
          "raid6",
          "raid6_zr",
          "raid10",
          "RAID1"
        })
    void lvcreateTypesRefused(String type) {
      assertRefused("lvcreate --type " + type + " -n x -L 1G vg", "--type " + type + ": " + REASON);
    }

    @ParameterizedTest
    @ValueSource(
        strings = {
          "lvcreate --type=raid1 -n x -L 1G vg|--type raid1",
          "lvcreate -m 1 -n x -L 1G vg|--mirrors 1",
          "lvcreate -m1 -n x -L 1G vg|--mirrors 1",
          "lvcreate -ym2 -n x -L 1G vg|--mirrors 2",
          "lvcreate --mirrors 1 -n x -L 1G vg|--mirrors 1",
          "lvcreate --mirrors=1 -n x -L 1G vg|--mirrors 1",
          "lvcreate -m 1 -m 0 -n x -L 1G vg|--mirrors 1",
          "lvcreate --mirrorlog core -n x -L 1G vg|--mirrorlog",
          "lvcreate -R 512k -n x -L 1G vg|--regionsize",
          "lvcreate -R512k -n x -L 1G vg|--regionsize",
          "lvcreate --region-size=1M -n x -L 1G vg|--regionsize",
          "lvcreate --raidintegrity y -n x -L 1G vg|--raidintegrity",
          "lvextend -m 1 -L +1G vg/lv|--mirrors 1"
        })
    void mirrorOptionsRefused(String caseLine) {
      // "command line|option as the refusal names it"
      int bar = caseLine.lastIndexOf('|');
      assertRefused(caseLine.substring(0, bar), caseLine.substring(bar + 1) + ": " + REASON);
    }

    @ParameterizedTest
    @ValueSource(
        strings = {
          "lvchange --monitor y vg/lv",
          "lvchange -ay --monitor=y vg/lv",
          "vgchange --monitor y vg",
          "vgchange -aey --monitor y",
          "lvcreate --monitor y -n x -L 1G vg"
        })
    void monitoringRefused(String commandLine) {
      assertRefused(commandLine, "--monitor y: dmeventd would repair or extend monitored LVs");
    }

    @ParameterizedTest
    @ValueSource(
        strings = {
          "lvcreate -n x -L 1G vg",
          "lvcreate -m 0 -n x -L 1G vg",
          "lvcreate -m0 -n x -L 1G vg",
          "lvcreate --mirrors=0 -n x -L 1G vg",
          "lvcreate --type linear -n x -L 1G vg",
          "lvcreate --type striped -i 2 -n x -L 1G vg",
          "lvcreate --monitor n -n x -L 1G vg"
        })
    void linearAndStripedLvcreateStillPlanned(String commandLine) throws Exception {
      assertThat(plan(commandLine).locks())
          .containsExactly(vg("vg", EX), lv("vg", "x", EX, PERSISTENT_ACTIVATION));
    }

    @Test
    void monitorNStillPlanned() throws Exception {
      // --monitor n changes no metadata: the VG lock stays PR.
      assertThat(plan("lvchange --monitor n vg/lv").locks()).containsExactly(vg("vg", PR));
      assertThat(plan("vgchange -ay --monitor n vg").locks()).containsExactly(vg("vg", PR));
      assertThat(plan("lvchange -aey --monitor n vg/lv").locks())
          .containsExactly(vg("vg", PR), lv("vg", "lv", EX, PERSISTENT_ACTIVATION));
    }
  }

  @Nested
  class ConfigOverrides {
    @ParameterizedTest
    @ValueSource(
        strings = {
          "lvs --config devices/scan_lvs=1 vg|--config",
          "lvs --config=devices/global_filter=r|.*| vg|--config",
          "pvs --config backup/backup_dir=/tmp|--config",
          "lvchange -ay --config global/locking_type=0 vg/lv|--config",
          "lvcreate --config activation/monitoring=1 -n x -L 1G vg|--config",
          "vgs --commandprofile p vg|--commandprofile",
          "pvs --command-profile p|--commandprofile",
          "lvcreate --profile p -n x -L 1G vg|--profile",
          "vgchange --profile p vg|--profile",
          "vgcreate --metadataprofile p vg /dev/x|--metadataprofile",
          "lvchange --metadata-profile p vg/lv|--metadataprofile",
          "lvs --help --config devices/scan_lvs=1|--config"
        })
    void refusedOnEveryCommand(String caseLine) {
      // "command line|option"; the global_filter value has '|' in it, hence the last one.
      int bar = caseLine.lastIndexOf('|');
      assertRefused(
          caseLine.substring(0, bar),
          caseLine.substring(bar + 1)
              + " is not accepted: the agent's lvm.conf is the cluster's; set it there");
    }
  }

  @Test
  void localOnlyCommandsNeedNoLock() throws Exception {
    assertThat(plan("version").isEmpty()).isTrue();
    assertThat(plan("lvmconfig --type diff").isEmpty()).isTrue();
    assertThat(plan("lvmconfig --type full -l").isEmpty()).isTrue();
    assertThat(plan("lvcreate --help").isEmpty()).isTrue();
  }

  /**
   * The agent runs lvm as root: an output file named by a client could be the agent's lvm.conf
   * (hints, filter, autoactivation) or any file of the host (found in review).
   */
  @ParameterizedTest
  @ValueSource(
      strings = {
        "lvmconfig --file /etc/lvm/lvm.conf",
        "lvmconfig --file=/etc/shadow",
        "lvmconfig --fi /etc/shadow",
        "config -f /etc/shadow",
        "dumpconfig -lf /etc/shadow",
        "vgcfgbackup -f /etc/shadow vg",
        "vgcfgbackup --file /etc/shadow vg"
      })
  void noCommandWritesAFileAClientNames(String commandLine) {
    assertRefused(commandLine, "could write any file of this host");
  }

  /** lvmpolld would write the VG's metadata without the cluster lock (found in review). */
  @ParameterizedTest
  @ValueSource(strings = {"lvchange --poll y vg/lv", "vgchange -ay --poll y vg"})
  void backgroundPollingIsRefused(String commandLine) {
    assertRefused(commandLine, "--poll y: lvm would finish a snapshot merge or a pvmove");
  }

  @Test
  void pollingOffIsAccepted() throws Exception {
    assertThat(plan("lvchange --poll n vg/lv").locks()).isNotEmpty();
  }

  @Test
  void argvRoundTrips() throws Exception {
    LvmCommand command = LvmCommand.parse("lvs", List.of("-o", "lv_name", "vg"));
    assertThat(command.argv()).containsExactly("lvs", "-o", "lv_name", "vg");
    assertThat(command.subcommand()).isEqualTo("lvs");
  }
}
