package io.clusterlvm.clvm.rpc;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The clvm API runs lvm as root for whoever connects, and TCP can't tell who that is: the agent
 * serves it over TCP on loopback addresses only (found in review: the docs suggested 0.0.0.0).
 */
class TcpAddressTest {
  @ParameterizedTest
  @ValueSource(strings = {"127.0.0.1:7960", "localhost:0", "127.0.0.2:7960"})
  void loopbackAddressesAreServed(String hostPort) {
    assertThat(ClvmServer.tcpAddress(hostPort).getAddress().isLoopbackAddress()).isTrue();
  }

  @ParameterizedTest
  @ValueSource(strings = {"0.0.0.0:7960", ":7960", "*:7960", "10.1.2.3:7960", "192.0.2.1:7960"})
  void otherAddressesAreRefused(String hostPort) {
    assertThatThrownBy(() -> ClvmServer.tcpAddress(hostPort))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("only a loopback address");
  }

  @ParameterizedTest
  @ValueSource(strings = {"7960", "127.0.0.1:port"})
  void malformedAddressesAreRefused(String hostPort) {
    assertThatThrownBy(() -> ClvmServer.tcpAddress(hostPort))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("--tcp-listen");
  }
}
