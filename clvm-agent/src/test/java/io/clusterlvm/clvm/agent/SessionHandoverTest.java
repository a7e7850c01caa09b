package io.clusterlvm.clvm.agent;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class SessionHandoverTest {
  @TempDir Path stateDir;

  @Test
  void isReadBackOnTheSameBootOnlyAndReadableByItsOwnerAlone() throws Exception {
    byte[] password = {1, 2, 3, (byte) 0xff};
    new SessionHandover("boot-1", 0x8000_0000_0000_0001L, password).write(stateDir);
    Path file = stateDir.resolve(SessionHandover.FILE);
    assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(file)))
        .isEqualTo("rw-------");

    assertThat(SessionHandover.read(stateDir, "boot-2")).as("another boot").isEmpty();
    SessionHandover h = SessionHandover.read(stateDir, "boot-1").orElseThrow();
    assertThat(h.sessionId()).isEqualTo(0x8000_0000_0000_0001L);
    assertThat(h.password()).containsExactly(password);
    assertThat(file).as("kept until the agent has started").exists();

    SessionHandover.delete(stateDir);
    assertThat(SessionHandover.read(stateDir, "boot-1")).isEmpty();
  }

  @Test
  void aMalformedFileIsIgnored() throws Exception {
    Files.writeString(
        stateDir.resolve(SessionHandover.FILE), "boot-1\nnot-hex\n!!\n", StandardCharsets.US_ASCII);
    assertThat(SessionHandover.read(stateDir, "boot-1")).isEmpty();
    Files.writeString(
        stateDir.resolve(SessionHandover.FILE), "boot-1\n", StandardCharsets.US_ASCII);
    assertThat(SessionHandover.read(stateDir, "boot-1")).isEmpty();
  }
}
