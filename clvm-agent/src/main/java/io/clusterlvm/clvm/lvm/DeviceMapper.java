package io.clusterlvm.clvm.lvm;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * What device-mapper has mapped on this host, read from sysfs ({@code /sys/block/dm-N/dm/name}).
 * For where lvm cannot say: a VG that lvm does not see (its storage path lost) may still have LVs
 * mapped here, under running VMs, while a VG that never existed has none.
 */
public final class DeviceMapper {
  /** The sysfs block directory to read instead of {@code /sys/block} (tests). */
  public static final String SYS_BLOCK_PROPERTY = "clvm.sys-block";

  private DeviceMapper() {}

  /** The device-mapper name lvm gives {@code vg/lv}: each '-' doubled, the two joined by '-'. */
  static String nameOf(String vg, String lv) {
    return vg.replace("-", "--") + "-" + lv.replace("-", "--");
  }

  /** Whether {@code vg/lv} may be mapped here: sysfs lists it, or sysfs cannot be read. */
  public static boolean mayBeMapped(String vg, String lv) {
    Path sysBlock = Path.of(System.getProperty(SYS_BLOCK_PROPERTY, "/sys/block"));
    String wanted = nameOf(vg, lv);
    try (DirectoryStream<Path> devices = Files.newDirectoryStream(sysBlock, "dm-*")) {
      for (Path device : devices) {
        Path name = device.resolve("dm").resolve("name");
        if (Files.isRegularFile(name)
            && Files.readString(name, StandardCharsets.UTF_8).strip().equals(wanted)) {
          return true;
        }
      }
      return false;
    } catch (IOException | RuntimeException e) {
      return true; // can't tell: it may be
    }
  }
}
