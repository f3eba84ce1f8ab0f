// Test oracle for vmfs/metadata: builds the APK Signature Scheme v4 merkle tree with
// apksig's own VerityTreeBuilder (the code apksigner uses for .idsig files).
//
// Usage: java -cp apksig.jar VerityTree.java <salt hex or -> <data> <tree out> [<data> <tree out>]...
// Writes each tree and prints its root hash in hex, one line per data file.
import com.android.apksig.internal.util.VerityTreeBuilder;
import com.android.apksig.util.DataSources;
import java.io.FileOutputStream;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.util.HexFormat;

public class VerityTree {
    public static void main(String[] args) throws Exception {
        byte[] salt = args[0].equals("-") ? null : HexFormat.of().parseHex(args[0]);
        for (int i = 1; i + 1 < args.length; i += 2) {
            try (RandomAccessFile in = new RandomAccessFile(args[i], "r");
                    VerityTreeBuilder builder = new VerityTreeBuilder(salt)) {
                ByteBuffer tree = builder.generateVerityTree(DataSources.asDataSource(in));
                byte[] root = builder.getRootHashFromTree(tree);
                try (FileOutputStream out = new FileOutputStream(args[i + 1])) {
                    out.write(tree.array());
                }
                System.out.println(HexFormat.of().formatHex(root));
            }
        }
    }
}
