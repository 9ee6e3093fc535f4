namespace GptSharp.Tensors.IO;

/// <summary>
/// Writes a file so that readers see either the previous version or the complete new one, never a
/// half-written file: the bytes go to a temporary file in the same directory (same file system, so the
/// rename is atomic), are flushed to disk, and only then replace the destination.
/// </summary>
public static class AtomicFile
{
    /// <summary>
    /// Test hook: wraps the temporary file's stream (e.g. in one that fails after N bytes) to check that a
    /// failed write leaves the previous file intact. Scoped to the current async flow, so parallel tests don't interfere.
    /// </summary>
    internal static readonly AsyncLocal<Func<Stream, Stream>?> WrapStreamForTests = new();

    /// <summary>Runs <paramref name="write"/> on a fresh stream and atomically moves the result to <paramref name="path"/>.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        string fullPath = Path.GetFullPath(path);
        string directory = Path.GetDirectoryName(fullPath)!;
        if (!Directory.Exists(directory))
            throw new DirectoryNotFoundException($"{path}: directory '{directory}' does not exist.");
        RemoveStaleTemporaries(directory, Path.GetFileName(fullPath));
        string tempPath = Path.Combine(directory, $".{Path.GetFileName(fullPath)}.{Environment.ProcessId}-{Guid.NewGuid():N}.tmp");
        try
        {
            using (var file = new FileStream(tempPath, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                var wrap = WrapStreamForTests.Value;
                Stream stream = wrap is null ? file : wrap(file);
                write(stream);
                stream.Flush();
                // Flush(true) forces the bytes to the disk before the rename makes them visible.
                file.Flush(flushToDisk: true);
            }
            File.Move(tempPath, fullPath, overwrite: true);
        }
        catch
        {
            try { File.Delete(tempPath); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

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
}
