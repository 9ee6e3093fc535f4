using Microsoft.Win32.SafeHandles;

namespace GptSharp.Formats;

/// <summary>Positional reads shared by the checkpoint readers that keep one open handle per file.</summary>
internal static class FileReads
{
    /// <summary>
    /// Fills <paramref name="destination"/> from <paramref name="offset"/> on (a read may return fewer bytes than asked).
    /// False when the file ends first, with <paramref name="endOffset"/> the byte where it did: each reader words its own error.
    /// </summary>
    public static bool TryReadExactly(SafeFileHandle handle, long offset, Span<byte> destination, out long endOffset)
    {
        while (destination.Length > 0)
        {
            int n = RandomAccess.Read(handle, destination, offset);
            if (n <= 0)
            {
                endOffset = offset;
                return false;
            }
            destination = destination[n..];
            offset += n;
        }
        endOffset = offset;
        return true;
    }
}
