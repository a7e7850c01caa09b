package io.clusterlvm.testing;

import static org.awaitility.Awaitility.await;

import java.io.IOException;
import java.io.InputStream;
import java.io.RandomAccessFile;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.attribute.BasicFileAttributes;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Assumptions;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A shared "LUN" for LVM tests: a sparse file attached to a loop device, seen by any number of
 * {@link SimulatedLvmHost simulated hosts}, each with its own LVM_SYSTEM_DIR.
 *
 * <p>Lifecycle: {@link #create} makes the file and attaches it ({@code losetup --find --show}),
 * remembering the device path it got; {@link #createSharedVg()} puts a PV and the VG on it; {@link
 * #close()} removes the VG (best effort), detaches <em>that</em> device by its path (never by a
 * pattern: other tests and other engineers' processes use loop devices too) and deletes the files.
 * If creation fails halfway, what was made is undone before the exception propagates. A JVM
 * shutdown hook closes a fixture a test forgot to close.
 *
 * <p>Device-mapper is absent in the sandboxes this runs in, so every host's lvm.conf sets {@code
 * global/activation=0}: the metadata commands work and activation is a no-op (the same as passing
 * {@code --driverloaded n} to every command, but it also covers commands run by code under test).
 */
public final class LoopVolumeGroup implements AutoCloseable {

  public static final long DEFAULT_SIZE_BYTES = 2L << 30;

  private static final Logger LOG = LoggerFactory.getLogger(LoopVolumeGroup.class);
  private static final Pattern LOOP_DEVICE = Pattern.compile("/dev/loop[0-9]+");
  private static final Pattern NAME = Pattern.compile("[A-Za-z0-9+_.][A-Za-z0-9+_.-]*");
  private static final Duration SETUP_TIMEOUT = Duration.ofSeconds(60);
  private static final Duration DETACH_TIMEOUT = Duration.ofSeconds(15);
  private static final String ADMIN_HOST = "fixture-admin";
  private static final Map<String, Boolean> SUPPORTED_SETTINGS = new ConcurrentHashMap<>();
  private static final AtomicInteger IO_THREADS = new AtomicInteger();
  private static final ExecutorService IO =
      Executors.newCachedThreadPool(
          r -> {
            Thread t = new Thread(r, "loop-vg-io-" + IO_THREADS.getAndIncrement());
            t.setDaemon(true);
            return t;
          });

  private enum State {
    STARTED,
    CLOSED
  }

  private final AtomicReference<State> state = new AtomicReference<>(State.STARTED);
  private final String vgName;
  private final Path directory;
  private final Path backingFile;
  private final String device;
  private final Map<String, SimulatedLvmHost> hosts = new LinkedHashMap<>();
  private final Thread shutdownHook;
  private volatile boolean pvCreated;

  private LoopVolumeGroup(String vgName, Path directory, Path backingFile, String device) {
    this.vgName = vgName;
    this.directory = directory;
    this.backingFile = backingFile;
    this.device = device;
    this.shutdownHook = new Thread(this::closeQuietly, "loop-vg-cleanup-" + device);
  }

  /**
   * Skips the calling test unless this machine can run lvm on loop devices (root, lvm2). As root
   * (CI, and ./test, which installs the packages) a missing piece fails the test instead: there,
   * every test must run.
   */
  public static void assumeAvailable() {
    requireOrSkip(
        Files.isWritable(Path.of("/dev/loop-control")),
        "needs root and /dev/loop-control to attach loop devices");
    requireOrSkip(findBinary("lvm") != null, "needs lvm2 installed (apt-get install lvm2)");
    requireOrSkip(findBinary("losetup") != null, "needs losetup (util-linux)");
  }

  static void requireOrSkip(boolean present, String what) {
    if ("root".equals(System.getProperty("user.name"))) {
      org.junit.jupiter.api.Assertions.assertTrue(
          present, what + " (running as root: not skipped)");
    } else {
      Assumptions.assumeTrue(present, what);
    }
  }

  /** Absolute path of the lvm binary (PATH, then /usr/sbin and /sbin, which surefire may lack). */
  public static String lvmBinary() {
    String lvm = findBinary("lvm");
    if (lvm == null) {
      throw new IllegalStateException("lvm binary not found; install lvm2");
    }
    return lvm;
  }

  /** Attaches a {@link #DEFAULT_SIZE_BYTES} sparse file; see {@link #create(String, long)}. */
  public static LoopVolumeGroup create(String vgName) throws IOException, InterruptedException {
    return create(vgName, DEFAULT_SIZE_BYTES);
  }

  /**
   * Creates a sparse file of {@code sizeBytes} in a new temp directory and attaches it to a free
   * loop device. The VG named {@code vgName} is not created yet: call {@link #createSharedVg()}.
   */
  public static LoopVolumeGroup create(String vgName, long sizeBytes)
      throws IOException, InterruptedException {
    if (!NAME.matcher(vgName).matches()) {
      throw new IllegalArgumentException("invalid VG name: " + vgName);
    }
    Path directory = Files.createTempDirectory("loopvg-" + vgName + "-");
    Path backingFile = directory.resolve("lun.img");
    String device = null;
    try {
      try (RandomAccessFile file = new RandomAccessFile(backingFile.toFile(), "rw")) {
        file.setLength(sizeBytes); // sparse: no blocks are written
      }
      backingFile = backingFile.toRealPath();
      SimulatedLvmHost.Result attach =
          exec(
              List.of(requireBinary("losetup"), "--find", "--show", backingFile.toString()),
              Map.of(),
              SETUP_TIMEOUT);
      String path = attach.stdout().trim();
      if (!attach.succeeded() || !LOOP_DEVICE.matcher(path).matches()) {
        throw new IOException("losetup could not attach " + backingFile + ": " + attach);
      }
      device = path;
      LoopVolumeGroup fixture = new LoopVolumeGroup(vgName, directory, backingFile, device);
      Runtime.getRuntime().addShutdownHook(fixture.shutdownHook);
      LOG.info("[vg={} dev={}] attached {}", vgName, device, backingFile);
      return fixture;
    } catch (IOException | InterruptedException | RuntimeException | Error e) {
      // Undo in reverse order; the device is detached by the exact path losetup printed.
      boolean interrupted = Thread.interrupted();
      try {
        if (device != null) {
          detach(device, backingFile);
        }
        deleteRecursively(directory);
      } catch (Exception cleanup) {
        e.addSuppressed(cleanup);
      } finally {
        if (interrupted) {
          Thread.currentThread().interrupt();
        }
      }
      throw e;
    }
  }

  public String vgName() {
    return vgName;
  }

  /** The loop device path this fixture attached, e.g. {@code /dev/loop3}. */
  public String device() {
    return device;
  }

  /** The temp directory holding the backing file and every simulated host's LVM_SYSTEM_DIR. */
  public Path directory() {
    return directory;
  }

  /**
   * A simulated host named {@code name} (created on first call, the same object afterwards), with
   * an lvm.conf that sees only this fixture's loop device and keeps its lock, backup and archive
   * dirs private.
   */
  public synchronized SimulatedLvmHost host(String name) throws IOException, InterruptedException {
    checkOpen();
    if (!NAME.matcher(name).matches()) {
      throw new IllegalArgumentException("invalid host name: " + name);
    }
    SimulatedLvmHost existing = hosts.get(name);
    if (existing != null) {
      return existing;
    }
    Path systemDir = directory.resolve("hosts").resolve(name);
    Path lockingDir = systemDir.resolve("lock");
    Files.createDirectories(lockingDir);
    Files.createDirectories(systemDir.resolve("backup"));
    Files.createDirectories(systemDir.resolve("archive"));
    Files.writeString(systemDir.resolve("lvm.conf"), lvmConf(name, systemDir, lockingDir));
    SimulatedLvmHost host = new SimulatedLvmHost(name, systemDir, lockingDir, lvmBinary());
    hosts.put(name, host);
    return host;
  }

  /**
   * Creates the PV and the VG on the loop device (through a host of the fixture's own, so the
   * test's hosts start with empty backup/archive dirs). It is a plain VG (lock_type none): the
   * hosts share it because they all see the same device.
   *
   * @throws IllegalStateException with lvm's output if pvcreate or vgcreate fails
   */
  public void createSharedVg() throws IOException, InterruptedException {
    SimulatedLvmHost admin = host(ADMIN_HOST);
    SimulatedLvmHost.Result pv = admin.lvm("pvcreate", "--yes", device);
    if (!pv.succeeded()) {
      throw new IllegalStateException("pvcreate failed: " + pv);
    }
    pvCreated = true;
    SimulatedLvmHost.Result vg = admin.lvm("vgcreate", "--yes", vgName, device);
    if (!vg.succeeded()) {
      throw new IllegalStateException("vgcreate failed: " + vg);
    }
    LOG.info("[vg={} dev={}] created", vgName, device);
  }

  /** True while this fixture's device is still attached to this fixture's backing file. */
  public boolean attached() throws IOException, InterruptedException {
    return isAttached(device, backingFile);
  }

  /**
   * Removes the VG and PV (best effort: the experiment may have corrupted them), detaches the loop
   * device by its path and deletes the directory. Idempotent. Runs to the end even if the calling
   * thread was interrupted (a JUnit timeout), restoring the interrupt flag afterwards.
   *
   * @throws IllegalStateException if the device could not be detached or files not deleted
   */
  @Override
  public void close() {
    if (!state.compareAndSet(State.STARTED, State.CLOSED)) {
      return;
    }
    boolean interrupted = Thread.interrupted();
    try {
      List<Exception> failures = new ArrayList<>();
      if (pvCreated) {
        removeVolumeGroupBestEffort();
      }
      try {
        detach(device, backingFile);
        LOG.info("[vg={} dev={}] detached", vgName, device);
      } catch (Exception e) {
        failures.add(e);
      }
      try {
        deleteRecursively(directory);
      } catch (Exception e) {
        failures.add(e);
      }
      try {
        Runtime.getRuntime().removeShutdownHook(shutdownHook);
      } catch (IllegalStateException shuttingDown) {
        // Called from the hook itself, or during JVM shutdown: nothing to unregister.
      }
      if (!failures.isEmpty()) {
        IllegalStateException failure =
            new IllegalStateException("cleanup of " + device + " / " + directory + " failed");
        failures.forEach(failure::addSuppressed);
        throw failure;
      }
    } finally {
      if (interrupted) {
        Thread.currentThread().interrupt();
      }
    }
  }

  @Override
  public String toString() {
    return "LoopVolumeGroup[vg=" + vgName + " dev=" + device + " dir=" + directory + "]";
  }

  private void closeQuietly() {
    try {
      close();
    } catch (RuntimeException e) {
      LOG.warn("[dev={}] cleanup at shutdown failed", device, e);
    }
  }

  private void removeVolumeGroupBestEffort() {
    try {
      SimulatedLvmHost admin = host0(ADMIN_HOST);
      SimulatedLvmHost.Result vg = admin.lvm("vgremove", "--yes", "--force", vgName);
      SimulatedLvmHost.Result pv = admin.lvm("pvremove", "--yes", "--force", "--force", device);
      if (!vg.succeeded() || !pv.succeeded()) {
        LOG.info(
            "[vg={} dev={}] VG/PV removal incomplete (the device is detached anyway): {} / {}",
            vgName,
            device,
            vg.exitCode(),
            pv.exitCode());
      }
    } catch (Exception e) {
      LOG.info("[vg={} dev={}] VG removal failed, detaching anyway", vgName, device, e);
    }
  }

  /** {@link #host} without the open check, for close(). */
  private synchronized SimulatedLvmHost host0(String name) {
    SimulatedLvmHost host = hosts.get(name);
    if (host == null) {
      throw new IllegalStateException("no host " + name);
    }
    return host;
  }

  private void checkOpen() {
    if (state.get() != State.STARTED) {
      throw new IllegalStateException(this + " is closed");
    }
  }

  private String lvmConf(String hostName, Path systemDir, Path lockingDir)
      throws IOException, InterruptedException {
    String filter = "[ \"a|^" + device + "$|\", \"r|.*|\" ]";
    StringBuilder conf = new StringBuilder();
    conf.append("# Simulated host ").append(hostName).append(", written by LoopVolumeGroup.\n");
    conf.append("devices {\n");
    conf.append("  dir = \"/dev\"\n");
    conf.append("  scan = [ \"/dev\" ]\n");
    // Only the shared LUN: other block devices, and other tests' loop devices, stay invisible.
    conf.append("  filter = ").append(filter).append('\n');
    conf.append("  global_filter = ").append(filter).append('\n');
    conf.append("  obtain_device_list_from_udev = 0\n");
    conf.append("  external_device_info_source = \"none\"\n");
    appendIfSupported(conf, "devices/use_devicesfile", "  use_devicesfile = 0\n");
    // The hints file lives at a fixed /run/lvm/hints, not under LVM_SYSTEM_DIR: it would be
    // shared by all simulated hosts, and on real hosts another host's pvcreate never invalidates
    // it. Without hints every command scans the (filtered) devices.
    appendIfSupported(conf, "devices/hints", "  hints = \"none\"\n");
    conf.append("}\n");
    conf.append("global {\n");
    // No device-mapper here; equivalent to --driverloaded n on every command.
    conf.append("  activation = 0\n");
    conf.append("  locking_dir = \"").append(lockingDir).append("\"\n");
    appendIfSupported(conf, "global/use_lvmlockd", "  use_lvmlockd = 0\n");
    // lvm 2.02 only; 2.03 removed lvmetad and always reads metadata from disk.
    appendIfSupported(conf, "global/use_lvmetad", "  use_lvmetad = 0\n");
    appendIfSupported(conf, "global/event_activation", "  event_activation = 0\n");
    conf.append("}\n");
    conf.append("activation {\n");
    conf.append("  udev_sync = 0\n");
    conf.append("  udev_rules = 0\n");
    conf.append("  monitoring = 0\n");
    conf.append("}\n");
    conf.append("backup {\n");
    conf.append("  backup = 1\n");
    conf.append("  backup_dir = \"").append(systemDir.resolve("backup")).append("\"\n");
    conf.append("  archive = 1\n");
    conf.append("  archive_dir = \"").append(systemDir.resolve("archive")).append("\"\n");
    conf.append("}\n");
    return conf.toString();
  }

  private static void appendIfSupported(StringBuilder conf, String setting, String line)
      throws IOException, InterruptedException {
    if (supports(setting)) {
      conf.append(line);
    }
  }

  /** Whether this lvm version knows a setting (lvmconfig exits 0 for known ones). */
  private static boolean supports(String setting) throws IOException, InterruptedException {
    Boolean known = SUPPORTED_SETTINGS.get(setting);
    if (known == null) {
      known =
          exec(
                  List.of(lvmBinary(), "lvmconfig", "--type", "default", setting),
                  Map.of("LVM_SUPPRESS_FD_WARNINGS", "1"),
                  SETUP_TIMEOUT)
              .succeeded();
      SUPPORTED_SETTINGS.put(setting, known);
    }
    return known;
  }

  private static boolean isAttached(String device, Path backingFile)
      throws IOException, InterruptedException {
    SimulatedLvmHost.Result list =
        exec(
            List.of(
                requireBinary("losetup"),
                "--list",
                "--noheadings",
                "--output",
                "BACK-FILE",
                device),
            Map.of(),
            SETUP_TIMEOUT);
    // losetup appends " (deleted)" once the file is gone; the prefix still identifies it.
    return list.succeeded() && list.stdout().trim().startsWith(backingFile.toString());
  }

  /**
   * Detaches {@code device} if (and only if) it is still backed by {@code backingFile}, retrying
   * while the kernel reports it busy (an lvm process of a timed-out test may still hold it).
   */
  private static void detach(String device, Path backingFile) {
    String losetup = requireBinary("losetup");
    await("detach " + device)
        .atMost(DETACH_TIMEOUT)
        .pollInterval(Duration.ofMillis(200))
        .until(
            () -> {
              if (!isAttached(device, backingFile)) {
                return true;
              }
              exec(List.of(losetup, "--detach", device), Map.of(), SETUP_TIMEOUT);
              return !isAttached(device, backingFile);
            });
  }

  private static void deleteRecursively(Path root) throws IOException {
    if (!Files.exists(root)) {
      return;
    }
    Files.walkFileTree(
        root,
        new SimpleFileVisitor<>() {
          @Override
          public FileVisitResult visitFile(Path file, BasicFileAttributes attrs)
              throws IOException {
            Files.delete(file);
            return FileVisitResult.CONTINUE;
          }

          @Override
          public FileVisitResult postVisitDirectory(Path dir, IOException e) throws IOException {
            if (e != null) {
              throw e;
            }
            Files.delete(dir);
            return FileVisitResult.CONTINUE;
          }
        });
  }

  static String requireBinary(String name) {
    String path = findBinary(name);
    if (path == null) {
      throw new IllegalStateException(name + " not found on PATH, /usr/sbin or /sbin");
    }
    return path;
  }

  static String findBinary(String name) {
    List<String> dirs = new ArrayList<>();
    String path = System.getenv("PATH");
    if (path != null) {
      dirs.addAll(List.of(path.split(":")));
    }
    dirs.addAll(List.of("/usr/sbin", "/sbin", "/usr/bin", "/bin"));
    for (String dir : dirs) {
      if (dir.isEmpty()) {
        continue;
      }
      Path candidate = Path.of(dir, name);
      if (Files.isExecutable(candidate)) {
        return candidate.toString();
      }
    }
    return null;
  }

  /**
   * Runs a command with extra environment, stdin from /dev/null, capturing both streams; kills it
   * and throws after {@code timeout}.
   */
  static SimulatedLvmHost.Result exec(
      List<String> command, Map<String, String> environment, Duration timeout)
      throws IOException, InterruptedException {
    ProcessBuilder builder = new ProcessBuilder(command);
    builder.environment().putAll(environment);
    builder.redirectInput(ProcessBuilder.Redirect.from(Path.of("/dev/null").toFile()));
    Process process = builder.start();
    CompletableFuture<String> stdout = readAsync(process.getInputStream());
    CompletableFuture<String> stderr = readAsync(process.getErrorStream());
    try {
      if (!process.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
        process.destroyForcibly();
        throw new IOException(String.join(" ", command) + " did not finish within " + timeout);
      }
      return new SimulatedLvmHost.Result(
          List.copyOf(command), process.exitValue(), stdout.get(), stderr.get());
    } catch (ExecutionException e) {
      throw new IOException("reading output of " + String.join(" ", command), e.getCause());
    } finally {
      if (process.isAlive()) {
        process.destroyForcibly();
      }
    }
  }

  private static CompletableFuture<String> readAsync(InputStream in) {
    return CompletableFuture.supplyAsync(
        () -> {
          try (in) {
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
          } catch (IOException e) {
            throw new UncheckedIOException(e);
          }
        },
        IO);
  }
}
