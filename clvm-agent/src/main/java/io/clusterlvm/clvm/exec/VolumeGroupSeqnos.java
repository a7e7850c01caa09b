package io.clusterlvm.clvm.exec;

import io.clusterlvm.clvm.lvm.LvmException;
import io.clusterlvm.clvm.lvm.LvmResult;
import io.clusterlvm.clvm.lvm.LvmRunner;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.List;
import java.util.Optional;
import java.util.OptionalLong;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Reads a VG's metadata seqno after a change, for the VG lock's value block.
 *
 * <p>The sure way is {@code vgs -o vg_seqno}: one more lvm run (a device scan, ~75 ms on a loop
 * device) per metadata change. The fast way: lvm writes its metadata backup ({@code
 * <backup_dir>/<vg>}, with {@code seqno = N}) when it unlocks a VG it changed. Its seqno is trusted
 * only when it is higher than the seqno the VG lock's value block held at the grant: this host
 * holds the VG lock EX, so nobody else can have written it since, and a higher number can only come
 * from this command's commit. Otherwise (backups off, {@code --autobackup n}, a failed command, an
 * unknown value block) it falls back to vgs.
 */
final class VolumeGroupSeqnos {

  private static final Logger LOG = LoggerFactory.getLogger(VolumeGroupSeqnos.class);
  private static final Pattern SEQNO = Pattern.compile("(?m)^\\s*seqno\\s*=\\s*(\\d+)\\s*$");
  private static final Pattern BACKUP_DIR = Pattern.compile("(?m)^backup_dir=\"(.*)\"\\s*$");
  private static final Pattern BACKUP_ON = Pattern.compile("(?m)^backup=1\\s*$");

  private final LvmRunner lvm;
  private final Optional<Path> backupDir;

  VolumeGroupSeqnos(LvmRunner lvm, Optional<Path> backupDir) {
    this.lvm = lvm;
    this.backupDir = backupDir;
  }

  /**
   * Asks lvm where this host's metadata backups go; empty if backups are off or lvm can't say (then
   * every seqno is read with vgs).
   */
  static Optional<Path> backupDirOf(LvmRunner lvm) throws InterruptedException {
    try {
      LvmResult r =
          lvm.run(
              "lvmconfig", List.of("--typeconfig", "full", "backup/backup", "backup/backup_dir"));
      if (!r.succeeded() || !BACKUP_ON.matcher(r.stdout()).find()) {
        return Optional.empty();
      }
      Matcher m = BACKUP_DIR.matcher(r.stdout());
      return m.find() ? Optional.of(Path.of(m.group(1))) : Optional.empty();
    } catch (IOException e) {
      LOG.warn("could not read lvm's backup settings ({}); seqnos are read with vgs", e.toString());
      return Optional.empty();
    }
  }

  /**
   * The VG's value after a command that held its lock EX.
   *
   * @param before the seqno the value block held at the grant, if known
   */
  VolumeGroupLockValue after(String vg, OptionalLong before)
      throws IOException, InterruptedException {
    if (backupDir.isPresent() && before.isPresent()) {
      OptionalLong backedUp = backupSeqno(backupDir.get().resolve(vg));
      if (backedUp.isPresent() && backedUp.getAsLong() > before.getAsLong()) {
        return VolumeGroupLockValue.of(backedUp.getAsLong());
      }
    }
    try {
      return VolumeGroupLockValue.of(lvm.vgSeqno(vg));
    } catch (LvmException e) {
      if (!lvm.volumeGroupNames().contains(vg)) {
        return VolumeGroupLockValue.gone();
      }
      throw e;
    }
  }

  private static OptionalLong backupSeqno(Path file) {
    try {
      // The header and seqno come first; a backup of a big VG is long, so read only its head.
      byte[] head;
      try (var in = Files.newInputStream(file)) {
        head = in.readNBytes(4096);
      }
      Matcher m = SEQNO.matcher(new String(head, StandardCharsets.UTF_8));
      return m.find() ? OptionalLong.of(Long.parseLong(m.group(1))) : OptionalLong.empty();
    } catch (NoSuchFileException e) {
      return OptionalLong.empty();
    } catch (IOException | NumberFormatException e) {
      LOG.debug("reading {}: {}", file, e.toString());
      return OptionalLong.empty();
    }
  }
}
