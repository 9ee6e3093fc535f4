using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

namespace GptSharp.IO;

/// <summary>
/// Writes a file so that readers see either the previous version or the complete new one, never a
/// half-written file, and so that the new version survives a power cut once <see cref="Write"/> returns:
/// the bytes go to a temporary file in the same directory (same file system, so the rename is atomic),
/// are flushed to disk (fsync), the file is renamed over the destination, and the directory is fsynced
/// so the rename itself is on disk. A process killed mid-write leaves only a temporary file, which
/// <see cref="RemoveLeftovers"/> deletes at the next start.
/// </summary>
internal static partial class AtomicFile
{
    /// <summary>
    /// Test hook: wraps the temporary file's stream (e.g. in one that fails after N bytes) to check that a
    /// failed write leaves the previous file intact. Scoped to the current async flow, so parallel tests don't interfere.
    /// </summary>
    internal static readonly AsyncLocal<Func<Stream, Stream>?> WrapStreamForTests = new();

    /// <summary>Runs <paramref name="write"/> on a fresh stream and atomically moves the result to <paramref name="path"/>.</summary>
    /// <param name="unbuffered">For big files written front to back (checkpoints): bypass the page cache where the OS allows
    /// it (<see cref="DirectFileStream"/>); the stream then cannot seek.</param>
    public static void Write(string path, Action<Stream> write, bool unbuffered = false)
    {
        string fullPath = Path.GetFullPath(path);
        string directory = Path.GetDirectoryName(fullPath)!;
        if (!Directory.Exists(directory))
            throw new DirectoryNotFoundException($"{path}: directory '{directory}' does not exist.");
        string fileName = Path.GetFileName(fullPath);
        RemoveStaleTemporaries(directory, fileName);
        // The writer's pid is in the name so that a later write can tell a dead writer's leftover from a live one's.
        string tempPath = Path.Combine(directory, $".{fileName}.{Environment.ProcessId}-{Guid.NewGuid():N}.tmp");
        try
        {
            using (Stream file = (Stream?)(unbuffered ? DirectFileStream.TryCreate(tempPath) : null)
                ?? new FileStream(tempPath, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                var wrap = WrapStreamForTests.Value;
                Stream stream = wrap is null ? file : wrap(file);
                write(stream);
                stream.Flush();
                // The bytes reach the disk (fsync) before the rename makes them visible.
                if (file is DirectFileStream direct) direct.FlushToDisk();
                else ((FileStream)file).Flush(flushToDisk: true);
            }
            File.Move(tempPath, fullPath, overwrite: true);
        }
        catch
        {
            try { File.Delete(tempPath); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
        SyncDirectory(directory);
    }

    /// <summary>
    /// Deletes the temporary files interrupted <see cref="Write"/>s left in <paramref name="directory"/>
    /// (names <c>.NAME.&lt;pid&gt;-&lt;32 hex&gt;.tmp</c>) whose writing process is gone. Call it when a program that
    /// owns the directory starts. Returns the names removed.
    /// </summary>
    public static IReadOnlyList<string> RemoveLeftovers(string directory)
    {
        var removed = new List<string>();
        if (!Directory.Exists(directory)) return removed;
        foreach (var path in Directory.EnumerateFiles(directory, ".*.tmp"))
        {
            string name = Path.GetFileName(path);
            var match = TempName().Match(name);
            if (!match.Success) continue;
            if (match.Groups["pid"].Success && IsAlive(int.Parse(match.Groups["pid"].Value))) continue;
            try
            {
                File.Delete(path);
                removed.Add(name);
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        return removed;
    }

    /// <summary>Deletes <paramref name="path"/> and makes the deletion durable (the directory is fsynced).</summary>
    public static void Delete(string path)
    {
        string fullPath = Path.GetFullPath(path);
        File.Delete(fullPath);
        SyncDirectory(Path.GetDirectoryName(fullPath)!);
    }

    // The pid is optional: files from before it was part of the name are leftovers too.
    [GeneratedRegex(@"^\..+\.(?:(?<pid>[0-9]{1,9})-)?[0-9a-f]{32}\.tmp$")]
    private static partial Regex TempName();

    /// <summary>
    /// Deletes the temporary files of earlier writes to the same file whose process is gone (killed by a signal, which
    /// runs no cleanup): their names are <c>.&lt;name&gt;.&lt;pid&gt;-&lt;guid&gt;.tmp</c>. A live process's temporary file is
    /// left alone, since it may be writing right now.
    /// </summary>
    private static void RemoveStaleTemporaries(string directory, string fileName)
    {
        string[] candidates;
        try
        {
            candidates = Directory.GetFiles(directory, $".{fileName}.*.tmp");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return;
        }
        foreach (string candidate in candidates)
        {
            string middle = Path.GetFileName(candidate)[(fileName.Length + 2)..^4];
            int dash = middle.IndexOf('-');
            if (dash <= 0 || !int.TryParse(middle[..dash], out int pid) || middle.Length - dash - 1 != 32 || IsAlive(pid)) continue;
            try { File.Delete(candidate); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    private static bool IsAlive(int pid)
    {
        if (pid == Environment.ProcessId) return true;
        try
        {
            using var process = System.Diagnostics.Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            return false;
        }
    }

    /// <summary>
    /// fsync of a directory: makes the renames and deletions in it durable (POSIX needs this for a rename to survive a
    /// power cut). Done on Linux; elsewhere a no-op (Windows has no equivalent: NTFS journals the rename).
    /// </summary>
    private static void SyncDirectory(string directory)
    {
        if (!OperatingSystem.IsLinux()) return;
        int fd;
        try
        {
            fd = Open(directory, 0 /* O_RDONLY */);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return;
        }
        if (fd < 0) return; // a directory that cannot be opened for reading still got the rename; durability is best effort
        try
        {
            FSync(fd);
        }
        finally
        {
            Close(fd);
        }
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync")]
    private static partial int FSync(int fd);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);
}
