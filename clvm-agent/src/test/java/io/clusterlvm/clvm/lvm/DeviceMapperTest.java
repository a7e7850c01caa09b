package io.clusterlvm.clvm.lvm;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Which LVs device-mapper has mapped, read from a sysfs stand-in. */
class DeviceMapperTest {
  @TempDir Path sysBlock;

  @AfterEach
  void restore() {
    System.clearProperty(DeviceMapper.SYS_BLOCK_PROPERTY);
  }

  @Test
  void namesAsLvmMapsThem() {
    assertThat(DeviceMapper.nameOf("vg_shared", "vm-101-disk-1"))
        .isEqualTo("vg_shared-vm--101--disk--1");
    assertThat(DeviceMapper.nameOf("pve-data", "lv")).isEqualTo("pve--data-lv");
  }

  @Test
  void mappedOnlyWhatSysfsLists() throws Exception {
    Files.createDirectories(sysBlock.resolve("dm-3").resolve("dm"));
    Files.writeString(sysBlock.resolve("dm-3").resolve("dm").resolve("name"), "vg-a--b\n");
    Files.createDirectories(sysBlock.resolve("loop0"));
    System.setProperty(DeviceMapper.SYS_BLOCK_PROPERTY, sysBlock.toString());
    assertThat(DeviceMapper.mayBeMapped("vg", "a-b")).isTrue();
    assertThat(DeviceMapper.mayBeMapped("vg", "a")).isFalse();
    assertThat(DeviceMapper.mayBeMapped("typo_vg", "a-b")).isFalse();
  }

  @Test
  void whatCannotBeReadMayBeMapped() {
    System.setProperty(DeviceMapper.SYS_BLOCK_PROPERTY, sysBlock.resolve("missing").toString());
    assertThat(DeviceMapper.mayBeMapped("vg", "lv")).isTrue();
  }
}
