package io.clusterlvm.dlm.server;

import io.clusterlvm.dlm.engine.ResourceKey;
import java.nio.charset.StandardCharsets;

/**
 * Where dlm-server keeps its records under the configured root:
 *
 * <pre>
 *   ROOT/dlm/leader          leader election (Curator LeaderLatch)
 *   ROOT/dlm/epoch           EpochRecord; its version fences every write of a deposed leader
 *   ROOT/dlm/nodes/NODE      NodeRecord
 *   ROOT/dlm/lockspaces/LS/BB/RES  ResourceRecord: the resource's queues and value block
 * </pre>
 *
 * BB is one of 256 buckets chosen by a hash of the resource name. Without them a lockspace with
 * ~75,000 resources lists more than ZooKeeper's 1 MB per response, and a new leader could not load
 * the table at all.
 *
 * <p>Names are percent-encoded so any printable name (with '/' or '.') is one path element. The
 * records carry the real names; only lockspace names are decoded, when a new leader lists them.
 */
final class ZkPaths {
  final String root;

  ZkPaths(String root) {
    this.root = root.endsWith("/") ? root.substring(0, root.length() - 1) : root;
  }

  String dlm() {
    return root + "/dlm";
  }

  String leader() {
    return dlm() + "/leader";
  }

  String epoch() {
    return dlm() + "/epoch";
  }

  String nodes() {
    return dlm() + "/nodes";
  }

  String node(String node) {
    return nodes() + "/" + encode(node);
  }

  String lockspaces() {
    return dlm() + "/lockspaces";
  }

  String lockspace(String lockspace) {
    return lockspaces() + "/" + encode(lockspace);
  }

  String bucket(ResourceKey key) {
    java.util.zip.CRC32 crc = new java.util.zip.CRC32();
    crc.update(key.resource().getBytes(StandardCharsets.UTF_8));
    return lockspace(key.lockspace()) + String.format("/b%02x", crc.getValue() & 0xff);
  }

  String resource(ResourceKey key) {
    return bucket(key) + "/" + encode(key.resource());
  }

  /** The name {@link #encode} turned into {@code element}. */
  static String decode(String element) {
    java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
    for (int i = 0; i < element.length(); i++) {
      char c = element.charAt(i);
      if (c == '%' && i + 2 < element.length()) {
        out.write(Integer.parseInt(element.substring(i + 1, i + 3), 16));
        i += 2;
      } else {
        out.write((byte) c);
      }
    }
    return out.toString(StandardCharsets.UTF_8);
  }

  static String encode(String name) {
    StringBuilder out = new StringBuilder();
    for (byte b : name.getBytes(StandardCharsets.UTF_8)) {
      char c = (char) (b & 0xff);
      if ((c >= 'a' && c <= 'z')
          || (c >= 'A' && c <= 'Z')
          || (c >= '0' && c <= '9')
          || c == '_'
          || c == '-') {
        out.append(c);
      } else {
        out.append('%').append(String.format("%02X", b & 0xff));
      }
    }
    return out.toString();
  }
}
