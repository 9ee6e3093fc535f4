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
        string tempPath = Path.Combine(directory, $".{Path.GetFileName(fullPath)}.{Guid.NewGuid():N}.tmp");
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
}
